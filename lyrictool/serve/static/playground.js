// The lyrictool playground: a form for every control, streamed lyrics, the server's rhyme analysis.
// It uses only the public API (/v1/chat/completions with stream=true, /v1/lyrics), so it doubles as an example.
// Model output is untrusted text: it only ever reaches the page through textContent, never as HTML.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const GENRES = ["民谣", "流行", "摇滚", "说唱", "古风", "R&B", "抒情", "儿歌", "电子", "爵士"];
const SECTION_ZH = {intro: "前奏", verse: "主歌", "pre-chorus": "导歌", chorus: "副歌", "post-chorus": "副歌后",
  hook: "记忆点", rap: "说唱", bridge: "桥段", interlude: "间奏", outro: "尾声"};
const CONTROL_ZH = {rhyme: "押韵 rhyme", scheme: "韵式 scheme", structure: "结构 structure",
  line_lengths: "字数 line lengths", format: "格式 format", all: "全部 all"};
const GROUP_INDEX = new Map(CONFIG.groups.map((g, i) => [g.name, i]));
const KEY_STORE = "lyrictool-api-key";

function status(text, kind = "") {
  notice("status", text, kind);
}

// ---- the form ---------------------------------------------------------------------------------------------------
function addSection(name = "verse", lines = 4) {
  const select = el("select", {class: "section-name", "aria-label": "section"});
  for (const s of CONFIG.sections) select.append(el("option", {value: s, text: `${s} ${SECTION_ZH[s] || ""}`}));
  select.value = name;
  const count = el("input", {class: "section-lines", type: "number", min: "1", max: "64", value: String(lines),
    "aria-label": "lines"});
  const remove = el("button", {type: "button", class: "small remove", title: "remove", text: "×"});
  const row = el("div", {class: "section-row"}, select, count, el("span", {class: "hint", text: "lines 行"}), remove);
  remove.addEventListener("click", () => row.remove());
  $("structure").append(row);
}

function setup() {
  $("model-id").textContent = CONFIG.model;
  for (const g of GENRES) $("genres").append(el("option", {value: g}));
  for (const g of CONFIG.groups) {
    $("rhyme").append(el("option", {value: g.name, text: g.examples ? `${g.name}辙 — ${g.examples}` : g.name}));
  }
  $("rhyme").append(el("option", {value: "__final", text: "a pinyin final… 按韵母"}));
  $("rhyme").addEventListener("change", () => { $("rhyme-final-box").hidden = $("rhyme").value !== "__final"; });
  $("add-section").addEventListener("click", () => addSection("chorus", 4));
  addSection("verse", 4);
  addSection("chorus", 4);
  $("temperature").value = CONFIG.sampling.temperature;
  $("top-p").value = CONFIG.sampling.top_p;
  $("max-tokens").value = CONFIG.limits.default_max_tokens;
  $("max-tokens").max = CONFIG.limits.max_tokens;
  $("best-of").max = CONFIG.limits.max_best_of;
  if (CONFIG.api_key_required) {
    $("keybox").hidden = false;
    $("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
  }
  $("form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
}

function readControls() {
  const c = {};
  const text = (id) => $(id).value.trim();
  if (text("topic")) c.topic = text("topic");
  if (text("genre")) c.genre = text("genre");
  const rhyme = $("rhyme").value === "__final" ? text("rhyme-final") : $("rhyme").value;
  if (rhyme) c.rhyme = rhyme;
  if (text("scheme")) c.scheme = text("scheme");
  const structure = [...document.querySelectorAll(".section-row")].map((row) => ({
    section: row.querySelector(".section-name").value,
    lines: parseInt(row.querySelector(".section-lines").value, 10)}));
  if (structure.length) c.structure = structure;
  const lengths = text("line-lengths").split(/[\s,，、]+/).filter(Boolean).map(Number);
  if (lengths.length) {
    const letters = c.scheme ? c.scheme.replace(/[\s|/]/g, "").length : 0;  // | and / separate sections
    const total = structure.reduce((n, s) => n + s.lines, 0) || letters;
    c.line_lengths = lengths.length === 1 && total > 1 ? Array(total).fill(lengths[0]) : lengths;
  }
  return c;
}

function headers() {
  const h = {"Content-Type": "application/json"};
  if (CONFIG.api_key_required) {
    const key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORE, key);
    if (key) h.Authorization = `Bearer ${key}`;
  }
  return h;
}

async function apiError(response) {
  let message = `HTTP ${response.status}`;
  try { message = (await response.json()).error.message || message; } catch (e) { /* not JSON */ }
  if (response.status === 401) {
    $("keybox").hidden = false;
    $("api-key").focus();
  }
  return new Error(message);
}

// ---- generation -------------------------------------------------------------------------------------------------
async function generate() {
  const controls = readControls();
  const bestOf = Math.max(1, parseInt($("best-of").value, 10) || 1);
  const sampling = {temperature: parseFloat($("temperature").value), top_p: parseFloat($("top-p").value),
    max_tokens: parseInt($("max-tokens").value, 10)};
  const expand = $("expand").checked;
  $("generate").disabled = true;
  $("results").replaceChildren();
  const started = performance.now();
  try {
    if (bestOf === 1) await streamOne(controls, sampling, expand);
    else await bestOfN(controls, sampling, expand, bestOf);
    status(`done in ${((performance.now() - started) / 1000).toFixed(1)} s`, "ok");
  } catch (e) {
    status(`error: ${e.message}`, "error");
  } finally {
    $("generate").disabled = false;
  }
}

// One song, streamed line by line from /v1/chat/completions; the analysis arrives with the last chunk.
async function streamOne(controls, sampling, expand) {
  status("generating… 生成中");
  const card = el("div", {class: "card streaming"});
  const live = el("div", {class: "lyrics live", "data-testid": "live"});
  card.append(live);
  $("results").append(card);
  const body = {model: CONFIG.model, messages: [{role: "user", content: "写一首歌"}], stream: true,
    controls, expand, ...sampling};
  const response = await fetch("/v1/chat/completions", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  if (!response.ok) throw await apiError(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "", analysis = null, expansion = null, finish = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.lyrictool && chunk.lyrictool.expansion) expansion = chunk.lyrictool.expansion;
      if (chunk.lyrictool && chunk.lyrictool.analysis) analysis = chunk.lyrictool.analysis;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          text += choice.delta.content;
          live.textContent = text;  // the lines so far, as the model writes them
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
  card.replaceWith(songCard(text, analysis, {title: "lyrics 歌词", finish, expansion}));
}

// best_of candidates from /v1/lyrics, all of them (candidates: true), best first.
async function bestOfN(controls, sampling, expand, bestOf) {
  status(`generating ${bestOf} candidates and ranking them… 生成 ${bestOf} 个候选并排序`);
  const body = {...controls, ...sampling, expand, n: 1, best_of: bestOf, candidates: true};
  const response = await fetch("/v1/lyrics", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  if (!response.ok) throw await apiError(response);
  const reply = await response.json();
  reply.candidates.forEach((cand, rank) => {
    $("results").append(songCard(cand.lyrics, {...cand, controls: reply.controls}, {
      title: rank === 0 ? `#1 of ${reply.best_of} — returned 最佳` : `#${rank + 1} of ${reply.best_of}`,
      finish: cand.finish_reason, expansion: rank === 0 ? reply.expansion : null, best: rank === 0}));
  });
}

// ---- rendering --------------------------------------------------------------------------------------------------
function groupClass(group) {
  if (!group) return "g-none";
  const i = GROUP_INDEX.has(group) ? GROUP_INDEX.get(group) : null;
  return i === null ? "g-other" : `g${i % 16}`;
}

function songCard(text, analysis, {title, finish, expansion, best}) {
  const card = el("div", {class: "card" + (best ? " best" : "")});
  const copy = el("button", {type: "button", class: "small copy", text: "Copy 复制"});
  copy.addEventListener("click", () => copyText(text, copy));
  card.append(el("div", {class: "card-head"}, el("h2", {text: title}),
    el("span", {class: "hint", text: finish ? `finish: ${finish}` : ""}), copy));
  if (expansion && expansion.imagery) {
    card.append(el("p", {class: "hint", text: `topic expanded with 意象: ${expansion.imagery.join("、")}`}));
  }
  if (!analysis) {
    card.append(el("div", {class: "lyrics", text}));
    return card;
  }
  if (analysis.rewards) card.append(rewardsTable(analysis));
  card.append(linesTable(analysis));
  card.append(controlsCheck(analysis));
  return card;
}

function rewardsTable(a) {
  const row = el("div", {class: "rewards"}, el("b", {text: `score ${a.score.toFixed(3)}`}));
  for (const [name, value] of Object.entries(a.rewards)) {
    row.append(el("span", {class: "reward", text: `${name} ${Number(value).toFixed(3)}`}));
  }
  return row;
}

function linesTable(a) {
  const table = el("table", {class: "analysis"});
  table.append(el("thead", {}, el("tr", {}, el("th", {text: "section"}), el("th", {text: "line 歌词"}),
    el("th", {text: "字"}), el("th", {text: "last syllable 韵脚"}), el("th", {text: "group 韵辙"}), el("th", {text: ""}))));
  const tbody = el("tbody");
  let section = null;
  for (const line of a.lines) {
    const tr = el("tr", {class: `line ${groupClass(line.rhyme_group)}` + (line.rhymes_as_asked === false ? " miss" : "")});
    tr.dataset.group = line.rhyme_group || "";
    const sectionName = line.section !== section ? (line.section || "") : "";
    section = line.section;
    const mark = line.rhymes_as_asked === true ? "✓" : line.rhymes_as_asked === false ? "✗ off-rhyme 不押" : "";
    tr.append(el("td", {class: "section", text: sectionName}), el("td", {class: "text", text: line.text}),
      el("td", {class: "num", text: String(line.syllables)}),
      el("td", {class: "sound", text: line.char ? `${line.char} ${line.pinyin || ""}` : "—"}),
      el("td", {}, el("span", {class: "chip", text: line.rhyme_group || "—"})),
      el("td", {class: "mark", text: mark}));
    tbody.append(tr);
  }
  table.append(tbody);
  return table;
}

function controlsCheck(a) {
  const box = el("div", {class: "controls-check"}, el("b", {text: "controls check 要求检查: "}));
  const metric = {rhyme: "rhyme_accuracy", scheme: "rhyme_accuracy", structure: "structure_accuracy",
    line_lengths: "line_length_accuracy", format: "format_validity"};
  for (const [name, met] of Object.entries(a.controls_met || {})) {
    const value = metric[name] && a.metrics ? a.metrics[metric[name]] : null;
    const label = `${met ? "✓" : "✗"} ${CONTROL_ZH[name] || name}` + (value != null ? ` ${(100 * value).toFixed(0)}%` : "");
    box.append(el("span", {class: `met ${met ? "yes" : "no"}`, "data-control": name, text: label}));
  }
  const issues = a.metrics && a.metrics.format_issues;
  if (issues && issues.length) box.append(el("span", {class: "hint", text: `format: ${issues.join("; ")}`}));
  return box;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {  // no clipboard permission: fall back to a selected textarea
    const area = el("textarea", {class: "offscreen"});
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied 已复制";
  setTimeout(() => { button.textContent = "Copy 复制"; }, 2000);
}

setup();
