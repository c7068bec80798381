"""Query expansion: turn a thin topic into concrete imagery before generation.

A request that says only "夏天" gives the model little to write about, and lyrics written from it come out
generic (the product's "content sufficiency" problem).  Before generation the server expands such a topic with
concrete images and details, from the rule table below and/or by asking the served model itself (recipe key
``expansion.mode``).  The expanded topic goes into the one prompt template (``build_prompt``) and the expansion
is returned to the client, so the user sees what was added.

The table is ours (written for this project); extend it by adding keys.  A topic matches a key when the key
occurs in it ("夏天的海边" matches 夏天 and 海), longest keys first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: topic keyword -> concrete imagery and details (original list, not taken from any corpus)
TOPIC_IMAGERY: dict[str, list[str]] = {
    "夏天": ["蝉鸣", "冰镇西瓜", "晚风", "萤火虫", "汽水瓶", "树荫下的单车", "雷阵雨", "晒黑的肩膀"],
    "春天": ["柳芽", "燕子", "细雨", "风筝", "桃花", "泥土的气味", "换下的棉衣", "河面解冻"],
    "秋天": ["落叶", "桂花香", "高远的天", "稻田", "大雁南飞", "毛衣", "晚霞", "枫叶"],
    "冬天": ["初雪", "呵出的白气", "围巾", "炉火", "结霜的窗", "热茶", "早黑的傍晚", "路灯"],
    "雨": ["屋檐滴水", "伞", "湿透的鞋", "窗上的水痕", "雷声", "积水里的倒影", "青石板", "潮湿的站台"],
    "雪": ["脚印", "雪人", "红围巾", "安静的街", "落满白的屋顶", "冻红的手", "路灯下的雪花", "松枝"],
    "海": ["浪花", "海鸥", "贝壳", "咸咸的风", "灯塔", "礁石", "退潮", "远处的船帆"],
    "月亮": ["月光", "窗台", "桂树", "团圆饭", "影子", "湖面", "夜归人", "银白的屋顶"],
    "夜": ["霓虹", "末班车", "路灯", "失眠", "窗外的星", "便利店", "耳机里的歌", "空荡的街"],
    "星空": ["银河", "流星", "草地", "萤火", "望远镜", "许愿", "山顶的风", "北斗"],
    "城市": ["地铁", "霓虹灯", "高楼", "早高峰", "出租屋", "外卖", "天桥", "加班的灯"],
    "故乡": ["老屋", "炊烟", "村口的树", "方言", "母亲的饭菜", "小河", "田埂", "站台"],
    "家乡": ["老屋", "炊烟", "村口的树", "方言", "母亲的饭菜", "小河", "田埂", "站台"],
    "思念": ["旧照片", "未寄的信", "车票", "熟悉的街角", "你的背影", "深夜的电话", "空座位", "月光"],
    "爱情": ["牵手", "心跳", "第一次约会", "雨中的伞", "情书", "晚霞", "并肩的影子", "誓言"],
    "爱": ["牵手", "心跳", "拥抱", "雨中的伞", "情书", "晚霞", "并肩的影子", "誓言"],
    "分手": ["空房间", "删掉的号码", "两把钥匙", "最后的拥抱", "雨夜", "旧礼物", "转身", "沉默"],
    "失恋": ["空房间", "删掉的号码", "眼泪", "旧歌", "雨夜", "回忆", "转身", "沉默"],
    "青春": ["操场", "白衬衫", "课桌上的刻字", "单车", "毕业照", "汽水", "晚自习", "梦想"],
    "毕业": ["毕业照", "学士帽", "留言册", "空教室", "散伙饭", "行李箱", "站台", "约定"],
    "校园": ["操场", "白衬衫", "黑板", "晚自习", "林荫道", "广播站", "图书馆", "下课铃"],
    "友情": ["并肩", "干杯", "深夜长谈", "旧照片", "篮球场", "借来的外套", "约定", "老地方"],
    "朋友": ["并肩", "干杯", "深夜长谈", "旧照片", "篮球场", "借来的外套", "约定", "老地方"],
    "母亲": ["白发", "厨房的灯", "唠叨", "缝补的衣裳", "门口的等待", "粗糙的手", "家常菜", "电话"],
    "妈妈": ["白发", "厨房的灯", "唠叨", "缝补的衣裳", "门口的等待", "粗糙的手", "家常菜", "电话"],
    "父亲": ["背影", "沉默", "自行车后座", "肩膀", "烟斗", "旧工装", "车站", "皱纹"],
    "爸爸": ["背影", "沉默", "自行车后座", "肩膀", "旧工装", "车站", "皱纹", "宽厚的手"],
    "旅行": ["背包", "地图", "车窗", "陌生的城", "明信片", "公路", "日落", "相机"],
    "远方": ["地平线", "铁轨", "背包", "远山", "候鸟", "风", "路标", "未知的城"],
    "梦想": ["星光", "舞台", "翅膀", "远方", "汗水", "不灭的灯", "起点", "奔跑"],
    "离别": ["站台", "挥手", "汽笛", "背影", "泪光", "行李", "渡口", "长亭"],
    "相遇": ["街角", "回眸", "雨天", "咖啡馆", "擦肩", "心跳", "初见的笑", "春风"],
    "孤独": ["空房间", "一个人的晚餐", "钟声", "影子", "窗外的雨", "未读的消息", "长夜", "路灯"],
    "回忆": ["旧照片", "老唱片", "泛黄的信", "小巷", "那年夏天", "褪色的票根", "旧课本", "老歌"],
    "江湖": ["长剑", "酒", "斗笠", "客栈", "明月", "孤舟", "快马", "刀光"],
    "山": ["云海", "石阶", "松涛", "山顶", "雾", "溪流", "古寺", "鸟鸣"],
    "风": ["风铃", "吹乱的头发", "麦浪", "风筝", "窗帘", "山谷", "落叶", "远方"],
    "花": ["花瓣", "花香", "蝴蝶", "露水", "花开花落", "庭院", "篱笆", "春泥"],
    "酒": ["酒杯", "醉意", "月下", "老友", "灯火", "长街", "酒馆", "干杯"],
    "茶": ["茶香", "青瓷", "炉火", "竹林", "午后", "清泉", "茶山", "细雨"],
    "时间": ["钟表", "沙漏", "日历", "老去的容颜", "四季", "年轮", "旧照片", "倒计时"],
    "自由": ["飞鸟", "旷野", "公路", "风", "天空", "单车", "海浪", "远方"],
    "希望": ["黎明", "种子", "灯火", "彩虹", "嫩芽", "晨光", "窗口", "起点"],
    "黑夜": ["星星", "路灯", "失眠", "月光", "霓虹", "末班车", "钟声", "寂静"],
    "长江": ["江水", "渡船", "江风", "两岸青山", "汽笛", "夕阳", "码头", "浪花"],
    "中秋": ["月饼", "圆月", "团圆饭", "桂花", "灯笼", "远方的家", "视频通话", "庭院"],
    "春节": ["红灯笼", "年夜饭", "鞭炮", "春联", "回家的车票", "饺子", "守岁", "拜年"],
}

_KEYS_LONGEST_FIRST = sorted(TOPIC_IMAGERY, key=len, reverse=True)
_ITEM = re.compile(r"^[\u4e00-\u9fff]{1,8}$")
_SPLIT = re.compile(r"[、，,；;。.\s/|]+")


@dataclass
class Expansion:
    """What was added to a topic, and from where (returned to the client)."""

    topic: str              # the topic as the user wrote it
    imagery: list[str]      # concrete images and details added
    source: str             # "rules" or "model"

    @property
    def expanded_topic(self) -> str:
        """The topic text the prompt template receives."""
        return f"{self.topic}（意象：{'、'.join(self.imagery)}）"

    def as_dict(self) -> dict:
        return {"topic": self.topic, "imagery": self.imagery, "source": self.source,
                "expanded_topic": self.expanded_topic}


def is_thin(topic: str | None, max_chars: int = 6) -> bool:
    """A topic short enough that it names a theme without any concrete content."""
    return bool(topic) and len(topic.strip()) <= max_chars and not _SPLIT.search(topic.strip())


def expand_by_rules(topic: str, max_items: int = 6) -> Expansion | None:
    """Imagery from the table for every key found in ``topic`` (longest keys first), or None."""
    lists: list[list[str]] = []
    rest = topic
    for key in _KEYS_LONGEST_FIRST:
        if key in rest:
            rest = rest.replace(key, "\0")  # "家乡" must not also count as a hit for a shorter key inside it
            lists.append(TOPIC_IMAGERY[key])
    # Round-robin over the matched keys, so each contributes before the cap cuts.
    items: list[str] = []
    for rank in range(max((len(x) for x in lists), default=0)):
        for imagery in lists:
            if rank < len(imagery) and imagery[rank] not in items:
                items.append(imagery[rank])
    if not items:
        return None
    return Expansion(topic=topic, imagery=items[:max_items], source="rules")


EXPANSION_PROMPT = "请为歌词主题“{topic}”列出{k}个具体的意象或细节，用顿号分隔，只写意象。"


def expansion_prompt(topic: str, max_items: int) -> str:
    """The user turn that asks the served model for imagery (mode ``model``)."""
    return EXPANSION_PROMPT.format(topic=topic, k=max_items)


def parse_model_imagery(text: str, topic: str, max_items: int = 6) -> Expansion | None:
    """Keep the model's answer only where it is a list of short Chinese phrases; None if nothing usable."""
    items: list[str] = []
    for part in _SPLIT.split(text):
        part = part.strip()
        if _ITEM.match(part) and part != topic and part not in items:
            items.append(part)
    if not items:
        return None
    return Expansion(topic=topic, imagery=items[:max_items], source="model")
