// What both pages use: element building and one-line notices.  Untrusted text only ever goes in as textContent.
"use strict";

const $ = (id) => document.getElementById(id);

// el("div", {class: "x", text: "..."}, child, ...): props other than text/class become attributes.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

// Show a one-line notice in the element with this id; kind is a CSS class ("", "error", "ok").
function notice(id, text, kind = "") {
  $(id).textContent = text;
  $(id).className = kind;
}
