// facerec serve: the page is a client of the JSON API (/api/model, /api/verify, ...).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const fmt = (x, digits = 4) => (typeof x === "number" ? x.toFixed(digits) : "-");
const state = { files: { a: null, b: null }, index: { a: 0, b: 0 } };

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try { body = await response.json(); } catch { body = { error: `HTTP ${response.status}` }; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function fact(dl, term, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(Object.assign(document.createElement("dt"), { textContent: term }),
            Object.assign(document.createElement("dd"), { textContent: String(value) }));
}

function showCard(model) {
  $("#model-title").textContent = model.title;
  const dl = $("#card-facts");
  fact(dl, "architecture", `${model.backbone} + ${model.embedding}, ${model.embedding_size}-d`);
  const known = (parts) => parts.filter(([, v]) => v !== null && v !== "").map(([k, v]) => `${k}${v}`);
  fact(dl, "trained with", known([["", model.head], ["step ", model.step], ["epoch ", model.epoch]]).join(", "));
  fact(dl, "training data", known([["", model.data || null], ["identities: ", model.num_classes]]).join("; "));
  fact(dl, "photos become", model.preparation);
  fact(dl, "threshold", model.threshold
    ? `${fmt(model.threshold.value)} (squared distance) — ${model.threshold.source}`
    : "none stored: run `facerec evaluate` on this model to choose one");
  fact(dl, "model", `${model.path} on ${model.device}`);
  const body = $("#card-results tbody");
  const sets = Object.entries(model.results);
  for (const [name, r] of sets) {
    const row = document.createElement("tr");
    const acc = r.accuracy_std === undefined ? fmt(r.accuracy) : `${fmt(r.accuracy)} ± ${fmt(r.accuracy_std)}`;
    for (const v of [name, acc, fmt(r.threshold), fmt(r.tar_at_far), fmt(r.auc), fmt(r.eer)]) {
      row.append(Object.assign(document.createElement("td"), { textContent: v }));
    }
    body.append(row);
  }
  if (!sets.length) $("#card-results").replaceWith(Object.assign(document.createElement("p"),
    { className: "muted", textContent: "No verification results recorded in training." }));
  for (const tab of document.querySelectorAll(".needs-gallery")) tab.hidden = !model.gallery;
  if (model.gallery) showGallery(model.gallery);
}

function showGallery(gallery) {
  const names = gallery.names.length ? `: ${gallery.names.join(", ")}` : "";
  const text = `${gallery.path}: ${gallery.identities} people, ${gallery.images} photos` +
    `${gallery.calibrated ? " (calibrated)" : ""}${names}`;
  for (const node of document.querySelectorAll(".gallery-summary")) node.textContent = text;
}

function answerLabel(top, identity) {
  const box = document.createElement("div");
  const best = Object.assign(document.createElement("strong"), {
    className: identity === "unknown" ? "unknown" : "named",
    textContent: identity ?? (top[0] ? top[0].name : "-"),
  });
  const list = document.createElement("ol");
  list.className = "top";
  for (const c of top) list.append(Object.assign(document.createElement("li"), { textContent: `${c.name} ${fmt(c.similarity, 3)}` }));
  box.append(best, list);
  return box;
}

async function identify() {
  const file = $("#identify input[type=file]").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("photo", file);
  const threshold = $("#identify-override").value;
  if (threshold) form.append("threshold", threshold);
  try {
    const result = await api("/api/identify", { method: "POST", body: form });
    showError("");
    const labels = result.answers.map((top, i) => answerLabel(top, result.identities[i]));
    renderPhoto($("#identify .photo"), file, result.photo, null, labels);
    $("#identify-threshold").textContent = result.threshold === null
      ? `no threshold: ${result.threshold_source}`
      : `"unknown" below cosine ${fmt(result.threshold)}: ${result.threshold_source}`;
  } catch (error) { showError(error.message); }
}

async function enroll(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const result = await api("/api/enroll", { method: "POST", body: form });
    showError("");
    const files = [...event.target.querySelector("input[type=file]").files];
    const root = $("#enroll-done");
    root.replaceChildren(Object.assign(document.createElement("p"), { id: "enroll-message",
      textContent: `Enrolled ${result.name}: ${result.images} photo(s) in the gallery now.` }));
    result.photos.forEach((photo, i) => {
      const crop = photo.faces[photo.chosen];
      root.append(Object.assign(document.createElement("img"), { className: "enrolled",
        src: `data:image/png;base64,${crop.crop_png}`, alt: `${files[i]?.name}: the face enrolled` }));
    });
    showGallery(result.gallery);
  } catch (error) { showError(error.message); }
}

function pick(slot, index) {
  state.index[slot] = index;
  verify();
}

// One photo with its face boxes over it and each face's crop below; onPick(i): a face chosen;
// labels[i]: a caption under crop i (default: its index and detector score).
function renderPhoto(root, file, photo, onPick, labels) {
  const stage = $(".stage", root);
  stage.replaceChildren();
  const img = document.createElement("img");
  img.src = URL.createObjectURL(file);
  img.alt = photo.name;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${photo.width} ${photo.height}`);
  img.onload = () => { svg.setAttribute("width", img.width); svg.setAttribute("height", img.height); };
  photo.faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.box;
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    Object.entries({ x: x1, y: y1, width: x2 - x1, height: y2 - y1 }).forEach(([k, v]) => rect.setAttribute(k, v));
    rect.setAttribute("vector-effect", "non-scaling-stroke");
    if (i === photo.chosen && onPick) rect.classList.add("chosen");
    if (onPick) rect.addEventListener("click", () => onPick(i));
    svg.append(rect);
  });
  stage.append(img, svg);
  $(".crops", root).replaceChildren(...photo.faces.map((face, i) => {
    const figure = document.createElement("figure");
    figure.className = i === photo.chosen && onPick ? "crop chosen" : "crop";
    const crop = Object.assign(document.createElement("img"),
      { src: `data:image/png;base64,${face.crop_png}`, alt: `face ${i} as the model sees it` });
    const score = face.score === null ? "" : ` (${fmt(face.score, 2)})`;
    const caption = document.createElement("figcaption");
    if (labels) caption.append(labels[i]); else caption.textContent = `face ${i}${score}`;
    figure.append(crop, caption);
    if (onPick) figure.addEventListener("click", () => onPick(i));
    return figure;
  }));
  $(".method", root).textContent = `${photo.faces.length} face(s): ${photo.method}; each crop is what the model embedded`;
}

function showPhoto(slot, photo) {
  renderPhoto($(`.photo[data-slot="${slot}"]`), state.files[slot], photo, (i) => pick(slot, i));
}

function showResult(result) {
  const decision = $("#decision");
  decision.className = result.decision || "";
  decision.textContent = { same: "Same person", different: "Different people" }[result.decision]
    || "No threshold: no decision";
  $("#similarity").textContent = fmt(result.similarity);
  $("#distance").textContent = fmt(result.distance);
  $("#threshold").textContent = result.threshold === null ? "none" : `${fmt(result.threshold)} (same below it)`;
  $("#threshold-source").textContent = result.threshold_source ? `threshold from ${result.threshold_source}` : "";
  $("#result").hidden = false;
}

async function verify() {
  if (!state.files.a || !state.files.b) return;
  const form = new FormData();
  form.append("a", state.files.a);
  form.append("b", state.files.b);
  form.append("index_a", state.index.a);
  form.append("index_b", state.index.b);
  const override = $("#threshold-override").value;
  if (override) form.append("threshold", override);
  try {
    const result = await api("/api/verify", { method: "POST", body: form });
    showError("");
    result.photos.forEach((photo, i) => showPhoto("ab"[i], photo));
    showResult(result);
  } catch (error) {
    $("#result").hidden = true;
    for (const part of document.querySelectorAll("#verify .stage, #verify .crops, #verify .method")) {
      part.replaceChildren();  // no stale photo beside the message
    }
    showError(error.message);
  }
}

function choose(slot, file) {
  state.files[slot] = file;
  state.index[slot] = 0;
  verify();
}

function wireDrops() {
  for (const root of document.querySelectorAll("#verify .photo")) {
    const slot = root.dataset.slot;
    const drop = $(".drop", root);
    const input = $("input", root);
    input.addEventListener("change", () => input.files[0] && choose(slot, input.files[0]));
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (e.dataTransfer.files[0]) choose(slot, e.dataTransfer.files[0]);
    });
  }
  $("#threshold-override").addEventListener("change", verify);
  $("#identify input[type=file]").addEventListener("change", identify);
  $("#identify-override").addEventListener("change", identify);
  $("#enroll form").addEventListener("submit", enroll);
}

function wireTabs() {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll("[role=tab]")) {
        other.setAttribute("aria-selected", String(other === tab));
        $(`#${other.dataset.tab}`).hidden = other !== tab;
      }
    });
  }
}

window.addEventListener("DOMContentLoaded", async () => {
  wireDrops();
  wireTabs();
  try { showCard(await api("/api/model")); } catch (error) { showError(error.message); }
});
