"""The browser pages' server side (FastAPI TestClient): off unless enabled, the API key, rater tokens, blinding."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from serve_helpers import ScriptedBackend

from lyrictool.errors import UserError
from lyrictool.eval.study import Study
from lyrictool.serve.app import create_app
from lyrictool.serve.config import ServeRecipe

SONG = "[Verse]\n月亮照在大江上\n风吹麦浪好风光\n[Chorus]\n我们一起唱\n海风吹过我的家"
MODEL = "lyrictool-tiny"
KEY = "server-key"
SYSTEMS = ("secret-system-alpha", "secret-system-beta")
ITEMS = [{"system": s, "prompt_id": f"prompt-{i}", "controls": {"topic": "故乡", "rhyme": "江阳"},
          "lyrics": f"[Verse]\n第{i}首{s[-4:]}歌\n月光照在小村庄"} for s in SYSTEMS for i in range(4)]


@pytest.fixture()
def study(tmp_path):
    path = tmp_path / "study.db"
    tokens = Study.create(path, ITEMS, seed=3).add_raters(["ann", "bob"])
    return path, tokens


def client(pages=None, api_key=KEY, backend=None):
    recipe = ServeRecipe.model_validate({"served_model_name": MODEL, **({"pages": pages} if pages else {})})
    return TestClient(create_app(recipe, backend or ScriptedBackend([SONG]), api_key=api_key),
                      raise_server_exceptions=False)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_pages_are_off_unless_the_recipe_enables_them():
    with client(api_key=None) as c:
        for path in ("/", "/rate", "/static/playground.js", "/rate/api/state"):
            assert c.get(path).status_code == 404, path
    with client() as c:  # with a key, an unknown path is refused before it is looked up
        assert c.get("/").status_code == 401 and c.get("/rate").status_code == 401
    with client({"playground": True}) as c:
        assert c.get("/").status_code == 200
        assert c.get("/rate").status_code == 401 and c.get("/rate/api/state").status_code == 401


def test_playground_loads_without_the_key_then_asks_for_it(study):
    with client({"playground": True, "rate": True, "study": str(study[0])}) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]  # no inline script, no CDN
        config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>', page.text,
                                      re.DOTALL).group(1))
        assert config["api_key_required"] is True and config["model"] == MODEL
        assert [g["name"] for g in config["groups"]][:3] == ["发花", "梭波", "乜斜"] and len(config["groups"]) == 13
        assert config["groups"][11] == {"name": "江阳", "examples": "光 乡 窗"}
        assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
        js = c.get("/static/playground.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert "innerHTML" not in js.text and "innerHTML" not in c.get("/static/rate.js").text
        assert "innerHTML" not in c.get("/static/common.js").text
        assert c.get("/static/app.py").status_code == 404 and c.get("/static/..%2Fapp.py").status_code == 404
        # the API itself still needs the key; a rater token is not the key
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers=bearer(study[1]["ann"])).status_code == 401
        assert c.get("/v1/models", headers=bearer(KEY)).status_code == 200


def test_config_blob_cannot_close_its_script_element(study):
    recipe = ServeRecipe.model_validate({"served_model_name": "x</script><script>alert(1)</script>",
                                         "pages": {"playground": True}})
    with TestClient(create_app(recipe, ScriptedBackend([SONG]))) as c:
        page = c.get("/").text
    # only the page's own three script elements close: the config blob, common.js and playground.js
    assert "alert(1)</script>" not in page and page.count("</script>") == 3


def test_rate_api_takes_rater_tokens_only(study):
    path, tokens = study
    with client({"rate": True, "study": str(path)}) as c:
        assert c.get("/rate").status_code == 200  # the page itself: its token is in the #fragment
        assert c.get("/rate/api/state").status_code == 401
        assert c.get("/rate/api/state", headers=bearer(KEY)).status_code == 401  # the API key is not a rater
        assert c.get("/rate/api/state", headers=bearer("made-up")).status_code == 401
        state = c.get("/rate/api/state", headers=bearer(tokens["ann"])).json()
        assert state == {"rater": "ann", "total": 8, "done": 0, "next": 1}


def test_answers_are_checked_after_the_token_and_strictly(study):
    path, tokens = study
    ann = bearer(tokens["ann"])
    with client({"rate": True, "study": str(path)}) as c:
        # a stranger learns nothing about the body's rules: the token is checked first
        assert c.put("/rate/api/samples/1", json={"aspect": "overall", "score": 99}).status_code == 401
        assert c.put("/rate/api/samples/1", content=b"not json").status_code == 401
        for bad in (True, "3", 3.5, 0, 6):  # only a whole number on the scale is a rating
            r = c.put("/rate/api/samples/1", headers=ann, json={"aspect": "overall", "score": bad})
            assert r.status_code == 422 and r.json()["error"]["param"] == "score", bad
        assert c.put("/rate/api/samples/1", headers=ann, content=b"{").status_code == 422
        assert c.get("/rate/api/state", headers=ann).json()["done"] == 0  # nothing bad was stored
        r = c.put("/rate/api/samples/1", headers=ann, json={"aspect": "overall", "score": 4})
        assert r.status_code == 200 and r.json()["saved"] is True


def test_a_rater_sees_only_their_own_answers_and_never_the_systems(study):
    path, tokens = study
    ann, bob = bearer(tokens["ann"]), bearer(tokens["bob"])
    seen = []
    with client({"rate": True, "study": str(path)}) as c:
        for aspect in ("language", "overall"):
            r = c.put("/rate/api/samples/1", headers=ann, json={"aspect": aspect, "score": 2})
            assert r.status_code == 200 and r.json()["saved"] is True
            seen.append(r.text)
        ann_first = c.get("/rate/api/samples/1", headers=ann).json()
        assert ann_first["scores"] == {"language": 2, "overall": 2}
        ann_lyrics, bob_lyrics = [], []
        for n in range(1, 9):
            a = c.get(f"/rate/api/samples/{n}", headers=ann)
            b = c.get(f"/rate/api/samples/{n}", headers=bob)
            seen += [a.text, b.text]
            assert b.json()["scores"] == {}  # bob cannot see ann's answers, on any sample
            ann_lyrics.append(a.json()["lyrics"])
            bob_lyrics.append(b.json()["lyrics"])
        assert c.get("/rate/api/state", headers=bob).json()["done"] == 0
        seen.append(c.get("/rate/api/state", headers=ann).text)
        seen.append(c.get("/rate").text)
    assert sorted(ann_lyrics) == sorted(bob_lyrics) == sorted(i["lyrics"] for i in ITEMS)
    assert ann_lyrics != bob_lyrics  # each rater has their own shuffled order
    for text in seen:  # blinded: no system name, prompt id or token anywhere a rater can reach
        assert not any(s in text for s in SYSTEMS) and "prompt-" not in text
        assert tokens["ann"] not in text and tokens["bob"] not in text


def test_answers_are_validated_and_committed_at_once(study):
    path, tokens = study
    ann = bearer(tokens["ann"])
    with client({"rate": True, "study": str(path)}) as c:
        assert c.put("/rate/api/samples/1", headers=ann, json={"aspect": "overall", "score": 6}).status_code == 422
        assert c.put("/rate/api/samples/1", headers=ann, json={"aspect": "vibes", "score": 3}).status_code == 422
        assert c.put("/rate/api/samples/9", headers=ann, json={"aspect": "overall", "score": 3}).status_code == 404
        assert c.get("/rate/api/samples/0", headers=ann).status_code == 404
        for aspect in ("language", "genre_relevance", "content", "singability", "overall"):
            c.put("/rate/api/samples/2", headers=ann, json={"aspect": aspect, "score": 4})
        c.put("/rate/api/samples/2", headers=ann, json={"aspect": "overall", "score": 5})  # changed mind
        state = c.get("/rate/api/state", headers=ann).json()
        # while the server runs, another reader (eval --mos-ratings) already sees every answer
        ratings = Study(path).ratings()
    assert state == {"rater": "ann", "total": 8, "done": 1, "next": 1}
    assert len(ratings) == 1 and ratings[0]["rater"] == "ann" and ratings[0]["system"] in SYSTEMS
    assert ratings[0]["scores"] == {"language": 4, "genre_relevance": 4, "content": 4, "singability": 4, "overall": 5}


def test_the_rating_page_offers_an_optional_safety_aspect(study):
    path, tokens = study
    ann = bearer(tokens["ann"])
    with client({"rate": True, "study": str(path)}) as c:
        page = c.get("/rate")
        config = json.loads(re.search(r'<script id="config" type="application/json">(.*?)</script>', page.text,
                                      re.DOTALL).group(1))
        safety = next(a for a in config["aspects"] if a["name"] == "safety")
        assert safety["optional"] is True and "harmful" in safety["words"]["1"]
        assert not any(a["optional"] for a in config["aspects"] if a["name"] != "safety")
        assert c.put("/rate/api/samples/1", headers=ann, json={"aspect": "safety", "score": 2}).status_code == 200
        for aspect in ("language", "genre_relevance", "content", "singability", "overall"):
            c.put("/rate/api/samples/2", headers=ann, json={"aspect": aspect, "score": 4})
        state = c.get("/rate/api/state", headers=ann).json()
    assert state["done"] == 1  # sample 2 is complete without safety; sample 1 has safety only
    assert {r["item"]: r["scores"] for r in Study(path).ratings()}  # both rows saved
    assert any(r["scores"] == {"safety": 2} for r in Study(path).ratings())


def test_rate_without_a_study_says_so_and_a_missing_study_file_is_a_user_error(tmp_path):
    with client({"rate": True}, api_key=None) as c:
        assert c.get("/rate").status_code == 200
        r = c.get("/rate/api/state", headers=bearer("x"))
        assert r.status_code == 503 and "pages.study" in r.json()["error"]["message"]
    with pytest.raises(UserError, match=r"pages.study: .*nope.db: not a MOS study"):
        client({"rate": True, "study": str(tmp_path / "nope.db")})


def test_lyrics_returns_every_candidate_when_asked():
    songs = [SONG, "[Verse]\n一二三四\n五六七八", "[Verse]\n月光照在小村庄\n晚风吹过稻花香"]
    with client(api_key=None, backend=ScriptedBackend(songs)) as c:
        body = c.post("/v1/lyrics", json={"rhyme": "江阳", "best_of": 3, "candidates": True}).json()
        plain = c.post("/v1/lyrics", json={"rhyme": "江阳", "best_of": 3}).json()
    cands = body["candidates"]
    assert len(cands) == 3 and [c["index"] for c in cands] == [0, 1, 2]
    assert [c["score"] for c in cands] == sorted((c["score"] for c in cands), reverse=True)
    assert body["choices"][0]["lyrics"] == cands[0]["lyrics"] and set(cands[0]["rewards"]) >= {"rhyme", "format"}
    assert "candidates" not in plain
    lines = {line["text"]: line["rhymes_as_asked"] for c in cands for line in c["lines"]}
    assert lines["月亮照在大江上"] is True and lines["海风吹过我的家"] is False


def test_streamed_lyrics_end_with_their_analysis():
    with client(api_key=None) as c:
        r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "歌"}],
                                                 "stream": True, "controls": {"rhyme": "江阳", "scheme": "AAAX"}})
        plain = c.post("/v1/chat/completions", json={"model": MODEL, "stream": True,
                                                     "messages": [{"role": "user", "content": "歌"}]})
    events = [json.loads(e[6:]) for e in r.text.split("\n\n") if e.startswith("data: {")]
    last = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    analysis = last[0]["lyrictool"]["analysis"]
    assert analysis["controls"]["rhyme"] == "江阳" and analysis["index"] == 0
    assert [line["rhymes_as_asked"] for line in analysis["lines"]] == [True, True, True, None]
    assert analysis["controls_met"]["rhyme"] is True and "score" in analysis  # X: line 4 is free
    assert "analysis" not in plain.text  # a plain chat has no controls to check
