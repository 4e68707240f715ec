// resnet serve: the web app. One page, hash routes, plain DOM; it talks only to the public /v1
// API (the same one `resnet.serve.Client` and curl use) and loads nothing from anywhere else.
"use strict";

const API = "/v1";
const AUGMENTS = ["paper", "none", "flip", "flip_erase", "light", "erase", "strong"];
const FREEZE = ["none", "backbone", "stages:1", "stages:2", "stages:3"];
const RECIPES = { "": "(none: the knobs below)", paper: "paper", speedrun: "speedrun", best: "best", ensemble: "ensemble" };
const TASKS = { classify: "Classify", detect: "Detect (boxes)", segment: "Segment (masks)" };
const COLORS = ["#2457c5", "#d9480f", "#1f7a3d", "#862e9c", "#5c940d", "#c2255c"];
let cleanups = []; // what the current view must undo when the page moves on

// ---------------------------------------------------------------- DOM helpers

/** An element: h("a", {href: "#", class: "x", onclick: fn}, "text", child, ...). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

function field(label, input) {
  return h("label", {}, label, input);
}

function select(name, options, value) {
  const pairs = Array.isArray(options) ? options.map((o) => [o, o]) : Object.entries(options);
  return h("select", { name }, pairs.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
}

function stat(label, id) {
  return h("div", {}, h("b", { id, text: "–" }), h("span", { text: label }));
}

function bar(fraction) {
  const i = h("i");
  i.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  return h("div", { class: "bar" }, i);
}

function statusBadge(status) {
  return h("span", { class: `status ${status || ""}`, dataset: { status: status || "" } }, status || "?");
}

// ---------------------------------------------------------------- errors and the API

function showError(message) {
  document.getElementById("error-text").textContent = message;
  document.getElementById("error").hidden = false;
}

function hideError() {
  document.getElementById("error").hidden = true;
}

class ApiFailure extends Error {}

/** Calls the API; a non-2xx answer shows its {"error": ...} in the banner and throws. */
async function api(path, { method = "GET", json, form } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) init.body = form;
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (e) {
    showError(`The server does not answer (${e.message}).`);
    throw new ApiFailure(e.message);
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const message = (body && body.error) || `${response.status} ${response.statusText}`;
    showError(`${method} ${API}${path}: ${message}`);
    throw new ApiFailure(message);
  }
  return body;
}

/** Uploads a form with progress (fetch cannot report upload progress). */
function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", API + path);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => {
      showError("The upload failed: the server does not answer.");
      reject(new ApiFailure("network"));
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr.response);
      const message = (xhr.response && xhr.response.error) || `${xhr.status} ${xhr.statusText}`;
      showError(`POST ${API}${path}: ${message}`);
      reject(new ApiFailure(message));
    };
    xhr.send(form);
  });
}

/** A list out of an answer that is a list or an object holding one under one of `keys`. */
function asList(answer, ...keys) {
  if (Array.isArray(answer)) return answer;
  for (const key of keys) if (answer && Array.isArray(answer[key])) return answer[key];
  return [];
}

function pick(obj, ...keys) {
  for (const key of keys) if (obj && obj[key] !== undefined && obj[key] !== null) return obj[key];
  return undefined;
}

const enc = encodeURIComponent;
const runPath = (id) => `/runs/${enc(id)}`;

// ---------------------------------------------------------------- formatting

function pct(x) {
  if (x === undefined || x === null || x === "" || Number.isNaN(Number(x))) return "–";
  const v = Number(x);
  return `${(v <= 1 ? v * 100 : v).toFixed(2)} %`;
}

function num(x, digits = 3) {
  if (x === undefined || x === null || x === "" || Number.isNaN(Number(x))) return "–";
  return Number(x).toFixed(digits);
}

function duration(seconds) {
  if (seconds === undefined || seconds === null || !Number.isFinite(Number(seconds))) return "–";
  const s = Math.round(Number(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function when(t) {
  if (!t) return "–";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

// ---------------------------------------------------------------- charts on <canvas>

/** Draws line series [{label, points: [[x, y]...]}] with axes; y in [0, 1] is shown as %. */
function drawChart(canvas, series, { title = "", percent = false } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 480;
  const height = canvas.clientHeight || 240;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  g.font = "12px system-ui, sans-serif";
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
  g.fillStyle = "#1d2430";
  g.fillText(title, 48, 16);
  if (!all.length) {
    g.fillStyle = "#5d6877";
    g.fillText("no epochs yet", width / 2 - 36, height / 2);
    return;
  }
  const box = { left: 52, right: width - 16, top: 26, bottom: height - 26 };
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys);
  let y1 = Math.max(...ys);
  if (y1 - y0 < 1e-6) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.08;
  [y0, y1] = [y0 >= 0 ? Math.max(0, y0 - pad) : y0 - pad, y1 + pad];
  const X = (x) => box.left + ((x - x0) / (x1 - x0)) * (box.right - box.left);
  const Y = (y) => box.bottom - ((y - y0) / (y1 - y0)) * (box.bottom - box.top);
  drawAxes(g, box, { x0, x1, y0, y1, X, Y, percent });
  series.forEach((s, i) => drawSeries(g, s, s.color || COLORS[i % COLORS.length], X, Y, box, i));
}

function drawAxes(g, box, { x0, x1, y0, y1, X, Y, percent }) {
  g.strokeStyle = "#d8dde4";
  g.fillStyle = "#5d6877";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    g.beginPath();
    g.moveTo(box.left, Y(y));
    g.lineTo(box.right, Y(y));
    g.stroke();
    g.fillText(percent ? `${(y * 100).toFixed(1)}` : y.toFixed(3), 4, Y(y) + 4);
  }
  const step = Math.max(1, Math.ceil((x1 - x0) / 10));
  g.textAlign = "center";
  for (let x = Math.ceil(x0); x <= x1; x += step) g.fillText(String(x), X(x), box.bottom + 16);
  g.textAlign = "left";
  g.fillText("epoch", 4, box.bottom + 16);
}

function drawSeries(g, s, color, X, Y, box, index) {
  const points = s.points.filter((p) => Number.isFinite(p[1]));
  g.strokeStyle = g.fillStyle = color;
  g.lineWidth = 2;
  g.setLineDash(s.dashed ? [5, 4] : []);
  g.beginPath();
  points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
  g.stroke();
  g.setLineDash([]);
  for (const [x, y] of points) g.fillRect(X(x) - 2, Y(y) - 2, 4, 4);
  const legendX = box.right - 120;
  g.fillRect(legendX, box.top + 4 + index * 16, 12, 3);
  g.fillText(s.label, legendX + 16, box.top + 9 + index * 16);
}

/** Loss and accuracy series out of metrics rows (metrics.csv / epoch_end events). */
function curveSeries(rows, prefix = "") {
  const col = (key) => rows.map((r) => [Number(r.epoch), r[key] === "" ? NaN : Number(r[key])]);
  return {
    loss: [
      { label: `${prefix}train loss`, points: col("train_loss") },
      { label: `${prefix}val loss`, points: col("val_loss"), dashed: true },
    ],
    acc: [
      { label: `${prefix}train acc`, points: col("train_acc") },
      { label: `${prefix}val acc`, points: col("val_acc"), dashed: true },
    ],
  };
}

function chartPair(rows) {
  const loss = h("canvas", { class: "chart", id: "chart-loss", "aria-label": "loss per epoch" });
  const acc = h("canvas", { class: "chart", id: "chart-acc", "aria-label": "accuracy per epoch" });
  const draw = (r) => {
    const s = curveSeries(r);
    drawChart(loss, s.loss, { title: "loss" });
    drawChart(acc, s.acc, { title: "top-1 accuracy (%)", percent: true });
    acc.dataset.points = String(r.length);
  };
  return { el: h("div", { class: "grid" }, loss, acc), draw: () => draw(rows) };
}

// ---------------------------------------------------------------- routing

const ROUTES = [
  [/^#\/datasets\/?$/, datasetsView, "datasets"],
  [/^#\/datasets\/(.+)$/, datasetView, "datasets"],
  [/^#\/train(?:\?(.*))?$/, trainView, "train"],
  [/^#\/runs\/?$/, runsView, "runs"],
  [/^#\/runs\/([^/]+)$/, runView, "runs"],
  [/^#\/compare\/([^/]+)\/([^/]+)$/, compareView, "runs"],
  [/^#\/predict(?:\?(.*))?$/, predictView, "predict"],
];

async function route() {
  for (const undo of cleanups.splice(0)) undo();
  hideError();
  const hash = location.hash || "#/datasets";
  const found = ROUTES.find(([re]) => re.test(hash));
  if (!found) return void (location.hash = "#/datasets");
  const [re, view, nav] = found;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === nav);
  const main = clear(document.getElementById("view"));
  main.dataset.view = view.name;
  const args = hash.match(re).slice(1).map((a) => (a === undefined ? a : decodeURIComponent(a)));
  try {
    await view(main, ...args);
  } catch (e) {
    if (!(e instanceof ApiFailure)) showError(`This page failed: ${e.message}`);
  }
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  cleanups.push(() => clearInterval(id));
}

// ---------------------------------------------------------------- data sets

async function datasetsView(main) {
  const progress = h("progress", { max: 1, value: 0, hidden: true });
  const file = h("input", { type: "file", name: "file", accept: ".zip,application/zip", id: "dataset-file" });
  const uploadForm = h("form", { class: "row", id: "dataset-upload", onsubmit: async (e) => {
    e.preventDefault();
    if (!file.files.length) return showError("Choose a ZIP file first.");
    const form = new FormData();
    form.append("file", file.files[0]);
    progress.hidden = false;
    try {
      const ds = await upload("/datasets", form, (f) => (progress.value = f));
      location.hash = `#/datasets/${enc(ds.id)}`;
    } finally {
      progress.hidden = true;
    }
  } }, file, h("button", { type: "submit" }, "Upload"), progress);
  const path = h("input", { type: "text", name: "path", placeholder: "/data/xrays", size: 40 });
  const pathForm = h("form", { class: "row", id: "dataset-path", onsubmit: async (e) => {
    e.preventDefault();
    const ds = await api("/datasets/path", { method: "POST", json: { path: path.value.trim() } });
    location.hash = `#/datasets/${enc(ds.id)}`;
  } }, path, h("button", { type: "submit", class: "secondary" }, "Register folder"));
  const list = h("tbody");
  main.append(
    h("h1", {}, "Data sets"),
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", {}, "Upload a ZIP"),
        h("p", { class: "muted" }, "ImageFolder layout (one folder per class, optionally under train/ val/ test/), or flat images with a CSV of path,label."),
        uploadForm),
      h("section", { class: "card" }, h("h2", {}, "A folder on the server"),
        h("p", { class: "muted" }, "Images already on this machine are used where they are (nothing is copied)."),
        pathForm)),
    h("h2", {}, "Available"),
    h("table", { id: "datasets" }, h("thead", {}, h("tr", {},
      ["Name", "Kind", "Tasks", "Classes", "Images", "Unreadable"].map((t) => h("th", { class: ["Classes", "Images", "Unreadable"].includes(t) ? "num" : "" }, t)))), list),
  );
  const answer = await api("/datasets");
  for (const ds of asList(answer, "datasets", "items")) {
    const classes = classCounts(ds);
    list.append(h("tr", { class: "link", dataset: { dataset: ds.id }, onclick: () => (location.hash = `#/datasets/${enc(ds.id)}`) },
      h("td", {}, h("a", { href: `#/datasets/${enc(ds.id)}` }, ds.name || ds.id)),
      h("td", {}, ds.kind || ""),
      h("td", {}, tasksOf(ds).join(", ")),
      h("td", { class: "num" }, (ds.classes || classes).length || "–"),
      h("td", { class: "num" }, pick(ds, "images") || sum(classes.map((c) => c.count)) || "–"),
      h("td", { class: "num" }, typeof ds.unreadable === "number" ? ds.unreadable : asList(ds.unreadable).length)));
  }
}

function sum(xs) {
  return xs.reduce((a, b) => a + (Number(b) || 0), 0);
}

function tasksOf(ds) {
  return asList(ds.tasks).length ? ds.tasks : ["classify"];
}

/** [{name, count, splits: {split: n}}] from `counts` ({split: {class: n}}) and `classes`. */
function classCounts(ds) {
  const bySplit = ds.counts || {};
  const names = [...(ds.classes || [])];
  for (const counts of Object.values(bySplit)) for (const c of Object.keys(counts)) if (!names.includes(c)) names.push(c);
  return names.map((name) => {
    const splits = Object.fromEntries(Object.entries(bySplit).map(([s, counts]) => [s, counts[name] || 0]));
    return { name, splits, count: sum(Object.values(splits)) };
  });
}

async function datasetView(main, id) {
  const ds = await api(`/datasets/${enc(id)}?samples=8`);
  const classes = classCounts(ds);
  const splits = Object.keys(ds.counts || {});
  const most = Math.max(1, ...classes.map((c) => c.count));
  const thumbs = ds.thumbnails || {};
  const unreadable = asList(ds.unreadable);
  const total = sum(classes.map((c) => c.count));
  main.append(
    h("div", { class: "row" }, h("h1", {}, ds.name || ds.id), h("span", { class: "spacer" }),
      h("a", { href: `#/train?dataset=${enc(ds.id)}&task=${enc(tasksOf(ds)[0])}`, id: "train-on" }, "Train on this data set →")),
    h("p", { class: "muted" }, [ds.kind, ds.layout, `${total} images`, `${classes.length} classes`, ds.source].filter(Boolean).join(" · ")),
    h("h2", {}, "Images per class"),
    h("table", { id: "class-counts" },
      h("thead", {}, h("tr", {}, h("th", {}, "Class"), splits.map((s) => h("th", { class: "num" }, s)), h("th", { class: "num" }, "total"), h("th", {}, ""), h("th", {}, "Samples"))),
      h("tbody", {}, classes.map((c) => h("tr", { dataset: { cls: c.name } },
        h("td", {}, c.name), splits.map((s) => h("td", { class: "num" }, c.splits[s])),
        h("td", { class: "num count" }, c.count), h("td", {}, bar(c.count / most)),
        h("td", {}, h("div", { class: "thumbs" }, asList(thumbs[c.name]).map((src) => h("img", { src: imageSrc(src), alt: c.name })))))))),
    h("h2", {}, `Images that could not be read (${unreadable.length})`),
    unreadable.length
      ? h("ul", { id: "unreadable" }, unreadable.map((u) => h("li", {}, typeof u === "string" ? u : `${u.file || u.path}: ${u.reason || u.error || ""}`)))
      : h("p", { class: "muted", id: "unreadable" }, "Every image could be read."),
  );
  if (!classes.length) main.append(h("p", { class: "muted" }, "No classes found."));
}

/** An <img> source from what the API gives: a URL, a data: URI, base64 PNG, or {url}. */
function imageSrc(x) {
  if (!x) return "";
  if (typeof x === "object") return imageSrc(pick(x, "url", "src", "image", "png", "data"));
  if (x.startsWith("data:") || x.startsWith("/") || x.startsWith("blob:")) return x;
  return `data:image/png;base64,${x}`;
}

// ---------------------------------------------------------------- train

async function trainView(main, query) {
  const params = new URLSearchParams(query || "");
  const [datasets, models, catalogue] = await Promise.all([api("/datasets"), api("/models"), api("/catalogue")]);
  const archs = new Map(asList(catalogue).map((m) => [m.name, m]));
  const dsList = asList(datasets, "datasets", "items");
  const served = asList(models, "models");
  const f = {
    task: select("task", TASKS, params.get("task") || "classify"),
    dataset: h("select", { name: "dataset" }),
    model: h("input", { type: "text", name: "model", value: "resnet20", list: "model-names", required: true }),
    recipe: select("recipe", RECIPES, ""),
    epochs: h("input", { type: "number", name: "epochs", value: 6, min: 1 }),
    budget: h("input", { type: "number", name: "time_budget", min: 0, step: "any", placeholder: "minutes (optional)" }),
    size: h("input", { type: "number", name: "image_size", min: 8, placeholder: "the images' own" }),
    batch: h("input", { type: "number", name: "batch_size", value: 128, min: 1 }),
    augment: select("augment", AUGMENTS, "paper"),
    weights: h("input", { type: "text", name: "weights", placeholder: "none, imagenet or a .pt file" }),
    freeze: select("freeze", FREEZE, "none"),
    name: h("input", { type: "text", name: "name", placeholder: "automatic", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]*" }),
  };
  const fillData = () => {
    const keep = f.dataset.value || params.get("dataset");
    const fit = dsList.filter((d) => tasksOf(d).includes(f.task.value));
    clear(f.dataset).append(...fit.map((d) => h("option", { value: d.id, selected: d.id === keep }, d.name || d.id)));
    const classifyOnly = f.task.value !== "classify";
    if (classifyOnly && f.batch.value === "128") f.batch.value = 8; // detection: small batches
    if (!classifyOnly && f.batch.value === "8") f.batch.value = 128;
    for (const el of [f.augment, f.freeze, f.budget, f.recipe]) el.disabled = classifyOnly;
  };
  f.task.addEventListener("change", fillData);
  fillData();
  for (const el of Object.values(f)) el.dataset.initial = el.value;
  // The chosen architecture's size and cost (from GET /v1/catalogue, as `resnet models` lists them).
  const modelNote = h("p", { class: "muted", id: "model-info" });
  const describe = async () => {
    const name = f.model.value.trim();
    if (!archs.has(name)) {
      modelNote.textContent = "Unknown model name: the list offers the known ones.";
      return;
    }
    const m = await api(`/catalogue/${enc(name)}`);
    if (f.model.value.trim() === name) modelNote.textContent = `${m.name}: ${archLabel(m)}${m.skips ? "" : " (plain: no skip connections)"}`;
  };
  f.model.addEventListener("change", describe);
  describe();
  const form = h("form", { class: "knobs card", id: "train-form", onsubmit: async (e) => {
    e.preventDefault();
    const body = { task: f.task.value, config: trainConfig(f, dsList) };
    if (f.recipe.value && !f.recipe.disabled) body.recipe = f.recipe.value;
    if (f.name.value.trim()) body.name = f.name.value.trim();
    const run = await api("/runs", { method: "POST", json: body });
    location.hash = `#/runs/${enc(run.id)}`;
  } },
  field("Task", f.task), field("Data", f.dataset), field("Model", f.model), field("Recipe", f.recipe),
  field("Epochs (at most)", f.epochs), field("Time budget (minutes)", f.budget), field("Image size (px)", f.size),
  field("Batch size", f.batch), field("Augmentation", f.augment), field("Pretrained weights", f.weights),
  field("Freeze", f.freeze), field("Run name", f.name), h("button", { type: "submit", id: "start" }, "Start training"));
  main.append(h("h1", {}, "Train"),
    h("datalist", { id: "model-names" }, [...archs.values()].map((m) => h("option", { value: m.name, label: `${m.family}, depth ${m.depth}${m.skips ? "" : ", plain"}` }))),
    form, modelNote,
    h("p", { class: "muted" }, "A recipe sets every knob from a tested configuration; the fields you fill in then override it. ",
      "With a time budget the run plans as many epochs as fit (at most the number above) and ends its schedule in time."),
    h("h2", {}, "Trained models on this server"), modelTable(served));
  if (!dsList.length) showError("No data set yet: upload one on the Data sets page first.");
}

/** "0.27 M parameters, 0.04 GMACs per 32 px image (cifar, depth 20)": what sets size and speed. */
function archLabel(m) {
  const macs = m.macs ? `, ${(m.macs / 1e9).toFixed(2)} GMACs per ${m.input_size} px image` : "";
  return `${(m.params / 1e6).toFixed(2)} M parameters${macs} (${m.family}, depth ${m.depth})`;
}

function modelTable(models) {
  if (!models.length) return h("p", { class: "muted" }, "None yet.");
  const cols = [["name", "Name"], ["task", "Task"], ["classes", "Classes", (v) => (Array.isArray(v) ? v.length : v)],
    ["params", "Parameters", (v) => (v ? `${(v / 1e6).toFixed(2)} M` : "")], ["input_size", "Input", (v) => (Array.isArray(v) ? v.join("×") : v)],
    ["backend", "Backend"], ["loaded", "Loaded", (v) => (v ? "yes" : "on first use")]];
  return h("table", { id: "models" }, h("thead", {}, h("tr", {}, cols.map(([, t]) => h("th", {}, t)))),
    h("tbody", {}, models.map((m) => h("tr", {}, cols.map(([k, , fmt]) => h("td", {}, m[k] === undefined || m[k] === null ? "" : fmt ? fmt(m[k]) : String(m[k])))))));
}

/** The run config the form describes (classification: TrainConfig sections; tasks: flat). */
function trainConfig(f, dsList) {
  const ds = dsList.find((d) => d.id === f.dataset.value) || {};
  const source = ds.source || ds.id;
  const n = (el) => (el.value === "" ? undefined : Number(el.value));
  const weights = f.weights.value.trim() || undefined;
  if (f.task.value !== "classify") {
    return prune({ model: f.model.value, data: source, epochs: n(f.epochs), size: n(f.size), batch_size: n(f.batch), weights });
  }
  const budget = n(f.budget);
  if (f.recipe.value) { // the recipe's own values stand, except the knobs changed here
    const set = (el, value) => (el.value !== el.dataset.initial ? value : undefined);
    return prune({
      model: { name: f.model.value },
      data: { source, augment: set(f.augment, f.augment.value), image_size: n(f.size), batch_size: set(f.batch, n(f.batch)) },
      finetune: { weights, freeze: set(f.freeze, f.freeze.value) },
      run: { epochs: set(f.epochs, n(f.epochs)), time_budget: budget === undefined ? undefined : budget * 60 },
    });
  }
  return prune({
    model: { name: f.model.value },
    data: { source, augment: f.augment.value, image_size: n(f.size), batch_size: n(f.batch) },
    finetune: { weights, freeze: f.freeze.value },
    run: { epochs: n(f.epochs), time_budget: budget === undefined ? undefined : budget * 60 },
  });
}

function prune(obj) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return obj;
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    const p = prune(v);
    if (p !== undefined && !(typeof p === "object" && p !== null && !Object.keys(p).length)) out[k] = p;
  }
  return out;
}

// ---------------------------------------------------------------- runs table and compare

const RUN_COLUMNS = [
  ["id", "Run", (r) => r.id],
  ["model", "Model", (r) => r.model ?? ""],
  ["data", "Data", (r) => shortData(r.data)],
  ["best_acc", "Best val acc", (r) => num0(r.best_acc), pct],
  ["test_acc", "Test acc", (r) => num0(r.test_acc), pct],
  ["epochs", "Epochs", (r) => num0(r.epochs), (v) => (Number.isNaN(v) ? "–" : v)],
  ["train_seconds", "Time", (r) => num0(r.train_seconds), duration],
  ["status", "Status", (r) => r.status],
  ["created", "Created", (r) => num0(r.created), when],
];
const NUMERIC = new Set(["best_acc", "test_acc", "epochs", "train_seconds", "created"]);

function num0(x) {
  return x === undefined || x === null ? NaN : Number(x);
}

function shortData(data) {
  const text = String(data ?? "");
  return text.includes("/") ? text.split("/").filter(Boolean).slice(-2).join("/") : text;
}

async function runsView(main) {
  const answer = await api("/runs");
  const runs = asList(answer, "runs");
  let sortKey = "created";
  let dir = -1;
  const chosen = new Set();
  const compare = h("button", { type: "button", id: "compare", disabled: true, onclick: () => {
    const [a, b] = [...chosen];
    location.hash = `#/compare/${enc(a)}/${enc(b)}`;
  } }, "Compare the two chosen");
  const body = h("tbody");
  const heads = RUN_COLUMNS.map(([key, title]) => h("th", { class: `sortable${NUMERIC.has(key) ? " num" : ""}`, dataset: { key }, onclick: () => {
    dir = sortKey === key ? -dir : NUMERIC.has(key) ? -1 : 1;
    sortKey = key;
    render();
  } }, title));
  const choose = (r) => h("input", { type: "checkbox", "aria-label": `choose ${r.id}`, checked: chosen.has(r.id), onchange: (e) => {
    if (e.target.checked) chosen.add(r.id);
    else chosen.delete(r.id);
    compare.disabled = chosen.size !== 2;
  } });
  const cell = (r, [key, , get, fmt]) => h("td", { class: NUMERIC.has(key) ? "num" : "" },
    key === "id" ? h("a", { href: `#/runs/${enc(r.id)}` }, r.id) : key === "status" ? statusBadge(r.status) : fmt ? fmt(get(r)) : get(r));
  function render() {
    const get = RUN_COLUMNS.find((c) => c[0] === sortKey)[2];
    const sorted = [...runs].sort((a, b) => compareValues(get(a), get(b)) * dir);
    heads.forEach((th) => (th.dataset.dir = th.dataset.key === sortKey ? (dir > 0 ? "asc" : "desc") : ""));
    clear(body).append(...sorted.map((r) => h("tr", { dataset: { run: r.id } }, h("td", {}, choose(r)), RUN_COLUMNS.map((c) => cell(r, c)))));
  }
  const queue = asList(answer.queue);
  main.append(h("div", { class: "row" }, h("h1", {}, "Runs"), h("span", { class: "spacer" }), compare),
    queue.length ? h("p", { class: "muted", id: "queue" }, `Waiting to train, in order: ${queue.join(", ")}`) : null,
    runs.length ? h("table", { id: "runs" }, h("thead", {}, h("tr", {}, h("th", {}, ""), heads)), body)
      : h("p", { class: "muted" }, "No runs yet: start one on the Train page."));
  render();
}

function compareValues(a, b) {
  if (typeof a === "number" || typeof b === "number") {
    const fix = (v) => (typeof v === "number" && !Number.isNaN(v) ? v : -Infinity);
    return fix(a) - fix(b);
  }
  return String(a ?? "").localeCompare(String(b ?? ""), undefined, { numeric: true });
}

async function compareView(main, a, b) {
  const [ra, rb] = await Promise.all([api(runPath(a)), api(runPath(b))]);
  const acc = h("canvas", { class: "chart", id: "compare-acc" });
  const loss = h("canvas", { class: "chart", id: "compare-loss" });
  main.append(h("h1", {}, "Compare runs"), h("div", { class: "grid" }, acc, loss),
    h("div", { class: "compare" }, [ra, rb].map((r) => h("section", { class: "card", dataset: { run: r.id } },
      h("h2", {}, h("a", { href: `#/runs/${enc(r.id)}` }, r.id), " ", statusBadge(r.status)),
      keyFigures(r), figureImg(r, "confusion_matrix.png", "confusion matrix"), perClassTable(r)))),
    h("h2", {}, "Config differences"), configDiff(ra.config, rb.config, a, b));
  const draw = () => {
    const sa = curveSeries(metricRows(ra), "A ");
    const sb = curveSeries(metricRows(rb), "B ");
    const recolor = (series, c) => series.map((x) => ({ ...x, color: c }));
    drawChart(acc, [...recolor(sa.acc, COLORS[0]), ...recolor(sb.acc, COLORS[1])], { title: `top-1 accuracy (%): A ${a}, B ${b}`, percent: true });
    drawChart(loss, [...recolor(sa.loss, COLORS[0]), ...recolor(sb.loss, COLORS[1])], { title: "loss" });
  };
  draw();
  onResize(draw);
}

function onResize(fn) {
  window.addEventListener("resize", fn);
  cleanups.push(() => window.removeEventListener("resize", fn));
}

function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out);
    else out[`${prefix}${k}`] = JSON.stringify(v);
  }
  return out;
}

function configDiff(ca, cb, a, b) {
  const fa = flatten(ca);
  const fb = flatten(cb);
  const keys = [...new Set([...Object.keys(fa), ...Object.keys(fb)])].filter((k) => fa[k] !== fb[k]).sort();
  if (!keys.length) return h("p", { class: "muted" }, "The two configs are the same.");
  return h("table", { id: "config-diff" }, h("thead", {}, h("tr", {}, h("th", {}, "key"), h("th", {}, a), h("th", {}, b))),
    h("tbody", {}, keys.map((k) => h("tr", {}, h("td", {}, k), h("td", {}, fa[k] ?? "–"), h("td", {}, fb[k] ?? "–")))));
}

// ---------------------------------------------------------------- one run

function metricRows(run) {
  return asList(run.metrics);
}

function fileUrl(run, name) {
  return `${API}${runPath(run.id)}/files/${enc(name)}`;
}

function figureImg(run, name, alt) {
  if (!asList(run.files).includes(name)) return null;
  return h("img", { class: "figure", src: `${fileUrl(run, name)}?t=${run.events || 0}`, alt, dataset: { file: name } });
}

function keyFigures(run) {
  const overall = (run.evaluation && run.evaluation.overall) || {};
  const split = run.evaluation ? run.evaluation.split : "test";
  return h("div", { class: "stats key-figures" },
    [["model", run.model], ["data", shortData(run.data)], ["best val acc", pct(run.best_acc)],
      [`${split} acc`, pct(run.test_acc ?? overall.top1)], ["macro F1", num(overall.macro_f1)],
      ["epochs", run.epochs ?? "–"], ["train time", duration(run.train_seconds)]]
      .map(([label, value]) => h("div", {}, h("b", {}, String(value ?? "–")), h("span", {}, label))));
}

function perClassTable(run) {
  const rows = asList(run.evaluation && run.evaluation.per_class);
  if (!rows.length) return null;
  return h("table", { class: "per-class" },
    h("caption", { class: "muted" }, `${run.evaluation.split} split`),
    h("thead", {}, h("tr", {}, ["Class", "Precision", "Recall", "F1", "Images"].map((t) => h("th", { class: t === "Class" ? "" : "num" }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", { dataset: { cls: r.name } }, h("td", {}, r.name),
      h("td", { class: "num" }, num(r.precision)), h("td", { class: "num" }, num(r.recall)),
      h("td", { class: "num" }, num(r.f1)), h("td", { class: "num" }, r.support ?? "–")))));
}

async function runView(main, id) {
  const run = await api(runPath(id));
  const rows = metricRows(run);
  const charts = chartPair(rows);
  const live = liveSection(run, rows, charts);
  const results = h("div", { id: "results" });
  main.append(
    h("div", { class: "row" }, h("h1", {}, run.id), live.badge, h("span", { class: "spacer" }), live.stop, live.resume),
    live.el, h("h2", {}, "Curves"), charts.el, results);
  charts.draw();
  onResize(charts.draw);
  live.onEnd = async () => fillResults(results, await api(runPath(id)));
  if (run.error) showError(`This run failed: ${run.error}`);
  const active = isActive(run.status);
  if (!active) await fillResults(results, run);
  if (run.events || active) live.follow(active); // catches up the log (and, if live, follows)
}

const isActive = (status) => ["queued", "running", "stopping"].includes(status);

/** The live part of a run page: progress, ETA, img/s, queue, log; follows the event stream. */
function liveSection(run, rows, charts) {
  const id = run.id;
  const badge = statusBadge(run.status);
  badge.id = "run-status";
  const progress = h("progress", { id: "progress", max: 1, value: run.status === "finished" ? 1 : 0 });
  const log = h("pre", { class: "log", id: "log" });
  const queue = h("p", { class: "muted", id: "queue-position" });
  const section = { badge, el: null, onEnd: null, source: null };
  const setStatus = (status) => {
    badge.textContent = status;
    badge.className = `status ${status}`;
    badge.dataset.status = status;
    section.stop.disabled = !["queued", "running"].includes(status);
    section.stop.textContent = status === "queued" ? "Cancel" : "Stop";
    section.resume.disabled = !["stopped", "failed", "cancelled"].includes(status);
    queue.hidden = status !== "queued";
  };
  section.stop = h("button", { type: "button", class: "danger", id: "stop", onclick: async () => {
    const r = await api(`${runPath(id)}/stop`, { method: "POST" });
    setStatus(r.status);
    addLog(r.status === "cancelled" ? "cancelled while queued" : "stop requested: the run stops at the next step and writes a resumable last.pt");
  } }, "Stop");
  section.resume = h("button", { type: "button", class: "secondary", id: "resume", onclick: async () => {
    const r = await api(`${runPath(id)}/resume`, { method: "POST" });
    setStatus(r.status);
    showQueue(r, queue);
    section.follow(true);
  } }, "Resume");
  const addLog = (text) => {
    log.append(`${text}\n`);
    log.scrollTop = log.scrollHeight;
  };
  section.el = h("section", { class: "card", id: "live" },
    progress, h("div", { class: "stats" }, stat("epoch", "epoch"), stat("ETA", "eta"), stat("img/s", "imgs"),
      stat("train loss", "loss"), stat("train acc", "acc"), stat("val acc", "val-acc")), queue, log);
  const ui = { setStatus, addLog, progress, rows, charts, queue, section, log, seen: 0 };
  section.follow = (live) => follow(id, ui, live);
  every(2000, async () => { // the queue position moves as the jobs before it end
    if (queue.hidden) return;
    const r = await api(runPath(id)).catch(() => null);
    if (r) showQueue(r, queue);
  });
  setStatus(run.status);
  showQueue(run, queue);
  if (run.progress) onStep(run.progress, ui, (sel) => section.el.querySelector(sel), { t0: 0, s0: 0 });
  return section;
}

function showQueue(run, el) {
  el.textContent = run.position ? `Waiting in the training queue: position ${run.position}.` : "Waiting to start.";
}

const EVENT_NAMES = ["run_start", "step", "epoch_end", "checkpoint", "log", "run_end", "error"];

/** Follows a run's event stream from event `ui.seen` on (0: from its start). The browser
 * reconnects by itself after a dropped connection and sends Last-Event-ID, so the server sends
 * only what was missed; the server ends the stream once the run has ended, and then the page
 * stops listening. `live`: the run is (about to be) running: refresh the results at its end. */
function follow(id, ui, live) {
  if (ui.section.source) ui.section.source.close();
  if (!ui.seen) clear(ui.log);
  const source = new EventSource(`${API}${runPath(id)}/events${ui.seen ? `?since=${ui.seen}` : ""}`);
  ui.section.source = source;
  const rate = { t0: 0, s0: 0 };
  const find = (sel) => ui.section.el.querySelector(sel);
  let last = "";
  const handle = (msg) => {
    let e;
    try {
      e = JSON.parse(msg.data);
    } catch {
      return;
    }
    if (msg.lastEventId) ui.seen = Number(msg.lastEventId) + 1;
    const name = (last = e.event || msg.type);
    if (name === "step") onStep(e, ui, find, rate, live);
    else if (name === "epoch_end") onEpoch(e, ui, find);
    else if (name === "log") ui.addLog(e.text);
    else if (name === "run_start") onStart(e, ui, live);
    else if (name === "checkpoint") ui.addLog(`saved ${e.kind} checkpoint (epoch ${e.epoch}, step ${e.step})`);
    else if (name === "error" || name === "run_end") onEnd(e, name, ui, live);
  };
  for (const name of EVENT_NAMES) source.addEventListener(name, handle);
  source.onmessage = handle;
  source.onerror = () => {
    if (last === "run_end" || last === "error") { // the server closed a finished stream
      source.close();
      if (live && ui.section.onEnd) ui.section.onEnd();
    } else if (source.readyState === EventSource.CLOSED) {
      showError("The run's event stream was refused; reload the page to follow it again.");
    }
  };
  cleanups.push(() => source.close());
}

function onStart(e, ui, live) {
  if (live) ui.setStatus("running");
  const sizes = e.train_size ? `: ${e.train_size} training images, ${e.planned_epochs} epochs, ${e.device} ${e.precision}` : "";
  ui.addLog(`${e.start_epoch || e.start_step ? "resumed" : "started"} ${e.task && e.task !== "classify" ? `${e.task} ` : ""}${e.model} on ${shortData(e.data)}${sizes}`);
}

function onStep(e, ui, find, rate, live) {
  if (live) ui.setStatus(ui.section.badge.dataset.status === "stopping" ? "stopping" : "running");
  const done = (e.epoch - 1) * e.steps + e.step;
  const total = e.epochs * e.steps;
  ui.progress.value = done / total;
  const now = performance.now() / 1000;
  if (!rate.t0 || e.global_step < rate.s0) Object.assign(rate, { t0: now, s0: e.global_step });
  const perStep = (now - rate.t0) / Math.max(1, e.global_step - rate.s0);
  find("#epoch").textContent = `${e.epoch} / ${e.epochs}`;
  find("#eta").textContent = live && e.global_step > rate.s0 ? duration(perStep * (total - done)) : "–";
  find("#imgs").textContent = Math.round(e.img_s);
  find("#loss").textContent = num(e.loss);
  find("#acc").textContent = pct(e.acc);
}

function onEpoch(e, ui, find) {
  const row = e.row || {};
  const at = ui.rows.findIndex((r) => Number(r.epoch) === Number(row.epoch));
  if (at >= 0) ui.rows[at] = row;
  else ui.rows.push(row);
  ui.rows.sort((a, b) => a.epoch - b.epoch);
  ui.charts.draw();
  find("#epoch").textContent = `${e.epoch} / ${e.epochs}`;
  if (row.val_acc !== undefined && row.val_acc !== null) find("#val-acc").textContent = pct(row.val_acc);
  ui.addLog(`epoch ${e.epoch}/${e.epochs}: train loss ${num(row.train_loss)}, train acc ${pct(row.train_acc)}, val acc ${pct(row.val_acc)}, ${duration(row.seconds)}`);
}

function onEnd(e, name, ui, live) {
  if (name === "error") {
    ui.addLog(`failed: ${e.message}`);
    if (live) showError(`The run failed: ${e.message}`);
    ui.setStatus("failed");
  } else {
    ui.addLog(`run ${e.status}`);
    ui.setStatus(e.status || "finished");
    if (e.status === "finished") ui.progress.value = 1;
  }
}

/** The finished (or stopped) run's figures, tables, misclassified images and downloads. */
async function fillResults(el, run) {
  const matrix = figureImg(run, "confusion_matrix.png", "confusion matrix");
  clear(el).append(
    h("h2", {}, "Summary"), keyFigures(run),
    h("div", { class: "grid" },
      h("section", {}, h("h3", {}, "Confusion matrix"), matrix || h("p", { class: "muted" }, "After the run finishes.")),
      h("section", {}, h("h3", {}, "Precision, recall and F1 per class"), perClassTable(run) || h("p", { class: "muted" }, "After the run finishes."))),
    figureImg(run, "curves.png", "loss and accuracy curves, as the run drew them"),
    h("h2", {}, "Downloads"), downloads(run),
    h("h2", {}, "Misclassified images"), h("div", { class: "tiles", id: "misclassified" }, h("p", { class: "muted" }, "…")),
    h("h2", {}, "Config"), h("pre", { class: "config", id: "config" }, JSON.stringify(run.config, null, 2)));
  const tiles = el.querySelector("#misclassified");
  if (run.status === "finished" && (run.task || "classify") === "classify") await fillMisclassified(tiles, run);
  else clear(tiles).append(h("p", { class: "muted" }, "For finished classification runs."));
}

async function fillMisclassified(el, run) {
  const answer = await api(`${runPath(run.id)}/misclassified?limit=24`).catch(() => null);
  clear(el);
  if (!answer) return void el.append(h("p", { class: "muted" }, "Not available (see the message above)."));
  const items = asList(answer.items);
  if (!items.length) return void el.append(h("p", { class: "muted" }, `None: every ${answer.split} image was right.`));
  for (const m of items) {
    el.append(h("figure", { class: "tile" }, h("img", { src: imageSrc(m.image), alt: `${m.true} taken for ${m.predicted}` }),
      h("figcaption", {}, h("span", { class: "bad predicted" }, `predicted ${m.predicted}`), ` (${pct(m.confidence)})`, h("br"),
        h("span", { class: "true" }, `true ${m.true}`))));
  }
}

function downloads(run) {
  const result = h("div", { id: "export-result" });
  const files = asList(run.files).filter((n) => !n.endsWith(".png"));
  const exportButton = (format, label, int8 = false) => h("button", { type: "button", class: "secondary", dataset: { format, int8 }, onclick: async (e) => {
    e.target.disabled = true;
    result.textContent = `Exporting to ${label} and checking it against the PyTorch model…`;
    try {
      showExport(result, await api(`${runPath(run.id)}/export`, { method: "POST", json: { format, int8 } }));
    } catch {
      result.textContent = "";
    } finally {
      e.target.disabled = false;
    }
  } }, `Export ${label}`);
  const canExport = files.includes("best.pt") || files.includes("last.pt");
  return h("div", {}, h("div", { class: "row", id: "downloads" },
    files.map((n) => h("a", { href: fileUrl(run, n), download: `${run.id}-${n}` }, n)),
    canExport ? EXPORTS.map(([format, label, int8]) => exportButton(format, label, int8)) : null), result);
}

// Formats offered by the run page's export buttons: [format, label, int8].
const EXPORTS = [["onnx", "ONNX"], ["onnx", "ONNX int8", true], ["openvino", "OpenVINO"],
  ["openvino", "OpenVINO int8", true], ["tflite", "LiteRT"], ["torchscript", "TorchScript"], ["keras", "Keras"]];

function showExport(el, answer) {
  const files = answer.files && answer.files.length ? answer.files : [answer];
  clear(el).append(h("p", {}, files.flatMap((f, i) => [i ? " + " : "", h("a", { href: f.download, download: f.file }, f.file)]),
    ` (${(answer.size_bytes / 2 ** 20).toFixed(1)} MiB) · `, h("span", { class: "parity" }, answer.line || JSON.stringify(answer.parity))));
}

// ---------------------------------------------------------------- predict

async function predictView(main, query) {
  const params = new URLSearchParams(query || "");
  const models = asList(await api("/models"), "models");
  const choices = Object.fromEntries(models.map((m) => [m.name,
    `${m.name}${m.loaded === false ? " (run: loads on first use)" : ` (${m.task || "classify"}, ${m.backend})`}`]));
  const model = select("model", choices, params.get("model") || Object.keys(choices)[0]);
  const topK = h("input", { type: "number", name: "top_k", value: 5, min: 1, max: 1000 });
  const cam = h("input", { type: "checkbox", name: "cam", checked: true });
  const results = h("div", { id: "predictions" });
  const predict = (files) => predictFiles(files, { model: model.value, topK: topK.value, cam: cam.checked }, results);
  const picker = h("input", { type: "file", id: "predict-files", accept: "image/*", multiple: true,
    onchange: () => picker.files.length && predict([...picker.files]) });
  const drop = h("div", { class: "drop", id: "drop" }, h("p", {}, "Drop images here"), h("p", {}, "or choose: ", picker));
  wireDrop(drop, predict);
  main.append(h("h1", {}, "Predict"),
    h("div", { class: "row card" }, field("Model", model), field("Top k", topK), h("label", { class: "check" }, cam, "Grad-CAM"), cameraControls(predict)),
    drop, results);
  if (!models.length) showError("No model to predict with: train a run, or start the server with --model.");
}

function wireDrop(el, onFiles) {
  const over = (e) => {
    e.preventDefault();
    el.classList.add("over");
  };
  el.addEventListener("dragenter", over);
  el.addEventListener("dragover", over);
  el.addEventListener("dragleave", () => el.classList.remove("over"));
  el.addEventListener("drop", (e) => {
    e.preventDefault();
    el.classList.remove("over");
    const files = [...(e.dataTransfer.files || [])];
    if (files.length) onFiles(files);
    else showError("Drop image files (PNG, JPEG …).");
  });
}

function cameraControls(onFiles) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return null;
  const video = h("video", { class: "camera", autoplay: true, playsinline: true, muted: true, hidden: true });
  let stream = null;
  const snap = h("button", { type: "button", hidden: true, onclick: () => {
    const c = h("canvas", { width: video.videoWidth, height: video.videoHeight });
    c.getContext("2d").drawImage(video, 0, 0);
    c.toBlob((blob) => onFiles([new File([blob], "camera.png", { type: "image/png" })]), "image/png");
  } }, "Snap");
  const stopCamera = () => {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.hidden = snap.hidden = true;
  };
  cleanups.push(stopCamera);
  const open = h("button", { type: "button", class: "secondary", id: "camera", onclick: async () => {
    if (stream) return stopCamera();
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true });
      video.srcObject = stream;
      video.hidden = snap.hidden = false;
    } catch (e) {
      showError(`No camera: ${e.message}`);
    }
  } }, "Camera");
  return h("div", { class: "row" }, open, snap, video);
}

async function predictFiles(files, { model, topK, cam }, el) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  if (model) form.append("model", model);
  form.append("top_k", topK);
  form.append("cam", cam ? "true" : "false");
  clear(el).append(h("p", { class: "muted" }, `Predicting ${files.length} image(s)…`));
  try {
    const answer = await api("/predict", { method: "POST", form });
    clear(el).append(...asList(answer.predictions).map((p, i) => predictionCard(p, files[i])));
  } catch {
    clear(el);
  }
}

function predictionCard(p, file) {
  const url = URL.createObjectURL(file);
  cleanups.push(() => URL.revokeObjectURL(url));
  const figure = (src, caption, cls) => h("figure", {}, h("img", { src, alt: caption, class: cls }), h("figcaption", {}, caption));
  const views = h("div", { class: "views" }, figure(url, file.name, "input"));
  if (p.cam_png) views.append(figure(imageSrc(p.cam_png), "Grad-CAM", "cam"));
  if (p.image_png) views.append(figure(imageSrc(p.image_png), p.detections ? "boxes" : "masks", "drawn"));
  const top = asList(p.top_k);
  let details;
  if (top.length) {
    details = [h("h3", { class: "top1" }, top[0].label),
      h("ol", { class: "topk" }, top.map((t) => h("li", {}, h("span", { class: "label" }, t.label), " ", h("span", { class: "prob" }, pct(t.prob)), bar(t.prob))))];
  } else if (p.detections) {
    details = [h("h3", { class: "top1" }, `${p.detections.length} object(s)`),
      h("ol", { class: "topk" }, p.detections.map((d) => h("li", {}, `${d.label} ${pct(d.score)}`, bar(d.score))))];
  } else {
    const areas = Object.entries(p.classes || {});
    details = [h("h3", { class: "top1" }, areas.length ? `${areas.length} class(es) found` : "nothing found"),
      h("ol", { class: "topk" }, areas.map(([name, frac]) => h("li", {}, `${name}: ${pct(frac)} of the image`, bar(frac))))];
  }
  return h("section", { class: "card result prediction" }, views, h("div", {}, details));
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("error-close").addEventListener("click", hideError);
  window.addEventListener("hashchange", route);
  route();
});
