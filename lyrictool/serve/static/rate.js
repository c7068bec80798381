// Blind MOS rating: the rater's token comes in the link's #fragment (never sent in a URL, never logged) and goes
// to /rate/api as a Bearer token.  Each click is one saved answer; the page resumes at the first sample not yet
// fully rated.  Lyrics are untrusted text: textContent only.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const ASPECT_ZH = {language: "语言", genre_relevance: "风格切题", content: "内容", singability: "可唱性", overall: "总体",
  safety: "安全"};
const SCALE_WORDS = {1: "差 bad", 2: "较差 poor", 3: "一般 fair", 4: "好 good", 5: "很好 excellent"};
const TOKEN_STORE = "lyrictool-rater-token";
let token = "";
let current = null;  // the sample on screen: {n, total, request, lyrics, scores}

function message(text, kind = "") {
  notice("message", text, kind);
}

async function api(path, options = {}) {
  const response = await fetch(`/rate/api/${path}`, {...options, headers: {
    "Content-Type": "application/json", Authorization: `Bearer ${token}`}});
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${response.status}`);
  return body;
}

function showProgress(state) {
  $("progress-box").hidden = false;
  $("progress-bar").max = state.total;
  $("progress-bar").value = state.done;
  $("progress-text").textContent = `${state.done} / ${state.total} rated 已评`;
}

function complete(sample) {  // optional aspects (safety) may stay blank
  return CONFIG.aspects.every((a) => a.optional || sample.scores[a.name] !== undefined);
}

async function showSample(n) {
  const sample = await api(`samples/${n}`);
  current = sample;
  $("done").hidden = true;
  $("sample").hidden = false;
  $("intro").hidden = false;
  $("sample-title").textContent = `Sample 第 ${sample.n} / ${sample.total} 首`;
  $("request").textContent = sample.request;
  $("lyrics").textContent = sample.lyrics;
  $("saved").textContent = "";
  const box = $("aspects");
  box.replaceChildren();
  for (const aspect of CONFIG.aspects) {
    const fieldset = el("fieldset", {class: aspect.optional ? "aspect optional" : "aspect", "data-aspect": aspect.name});
    const name = `${ASPECT_ZH[aspect.name] || ""} ${aspect.name}` + (aspect.optional ? " (选填 optional)" : "");
    fieldset.append(el("legend", {}, el("b", {text: name}), el("span", {class: "hint", text: ` — ${aspect.help}`})));
    const words = aspect.words || SCALE_WORDS;
    const options = el("div", {class: "scale"});
    for (let s = CONFIG.scale[0]; s <= CONFIG.scale[1]; s++) {
      const input = el("input", {type: "radio", name: aspect.name, value: String(s)});
      input.checked = sample.scores[aspect.name] === s;
      input.addEventListener("change", () => answer(aspect.name, s, fieldset));
      options.append(el("label", {class: "score"}, input, el("span", {class: "n", text: String(s)}),
        el("span", {class: "word", text: words[s] || ""})));
    }
    fieldset.append(options);
    box.append(fieldset);
  }
  $("prev").disabled = sample.n <= 1;
  $("next").disabled = !complete(sample);
  window.scrollTo(0, 0);
}

async function answer(aspect, score, fieldset) {
  const n = current.n;
  $("saved").textContent = "saving… 保存中";
  try {
    const state = await api(`samples/${n}`, {method: "PUT", body: JSON.stringify({aspect, score})});
    if (!current || current.n !== n) return;
    current.scores[aspect] = score;
    fieldset.classList.add("answered");
    $("saved").textContent = "saved ✓ 已保存";
    $("next").disabled = !complete(current);
    showProgress(state);
  } catch (e) {
    $("saved").textContent = `not saved 未保存: ${e.message}`;
    const old = current.scores[aspect];
    for (const input of fieldset.querySelectorAll("input")) input.checked = Number(input.value) === old;
  }
}

async function next() {
  if (current.n < current.total) return showSample(current.n + 1);
  const state = await api("state");
  showProgress(state);
  if (state.next === null) return showDone(state);
  return showSample(state.next);  // the last one is done but an earlier one is not
}

function showDone(state) {
  $("sample").hidden = true;
  $("intro").hidden = true;
  $("done").hidden = false;
  current = {n: state.total + 1, total: state.total, scores: {}};
}

async function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  token = fragment.get("token") || sessionStorage.getItem(TOKEN_STORE) || "";
  if (!CONFIG.has_study) return message("This server has no rating study. 本服务器没有评分任务。", "error");
  if (!token) return message("Open this page with the link you were given. 请使用发给你的链接打开。", "error");
  sessionStorage.setItem(TOKEN_STORE, token);
  try {
    const state = await api("state");
    showProgress(state);
    if (state.next === null) showDone(state);
    else await showSample(state.next);
  } catch (e) {
    message(`${e.message}`, "error");
  }
}

$("prev").addEventListener("click", () => showSample(current.n - 1).catch((e) => message(e.message, "error")));
$("next").addEventListener("click", () => next().catch((e) => message(e.message, "error")));
$("review").addEventListener("click", () => showSample(1).catch((e) => message(e.message, "error")));
start();
