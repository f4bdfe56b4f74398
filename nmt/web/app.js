// nmt web page: translate with the JSON API and draw each sentence's attention heatmap.
// Plain JavaScript, no build step and no third-party code: the page works offline.
//
// The heatmap is a CSS grid: one `.cell` element per (target token, source token) pair,
// carrying data-row, data-col, data-source, data-target and data-weight.

"use strict";

(() => {
  const $ = (selector) => document.querySelector(selector);
  const els = {
    form: $("#form"),
    source: $("#source"),
    beam: $("#beam"),
    button: $("#translate"),
    buttonLabel: $("#translate .label"),
    counter: $("#counter"),
    error: $("#error"),
    output: $("#output"),
    meta: $("#meta"),
    translation: $("#translation"),
    heatmapCard: $("#heatmap-card"),
    heatmap: $("#heatmap"),
    toggle: $("#mode-toggle"),
    tooltip: $("#tooltip"),
    status: $("#status"),
    statusText: $("#status-text"),
    direction: $("#direction"),
    swap: $("#swap"),
    modelSelect: $("#model-select"),
    viewChoice: $("#view-choice"),
    viewSelect: $("#view-select"),
    examples: $("#examples"),
  };

  const LANGUAGES = {
    de: "German", en: "English", fr: "French", cs: "Czech", es: "Spanish", it: "Italian",
    nl: "Dutch", pt: "Portuguese", ro: "Romanian", ru: "Russian", tr: "Turkish",
  };
  // Example chips per source language (the German ones are Multi30k-style captions and
  // everyday sentences; the page shows those of the chosen model's source language).
  const EXAMPLES = {
    de: ["Ein Mann fährt Fahrrad.", "Kannst du mir bitte helfen?",
         "Zwei junge Männer spielen auf einer Wiese Fußball, während ein Hund zuschaut."],
    en: ["A man is riding a bike.", "Can you help me, please?",
         "Two young men are playing soccer on a field while a dog watches."],
  };
  const OPEN_HEATMAPS = 3; // later sentences' heatmaps are drawn when they are opened
  const MIN_CELL = 14;
  const MAX_CELL = 30;

  const state = {
    limits: { max_beam: 10, default_beam: 5, max_sentences: 64, max_sentence_chars: 1000 },
    mode: "soft",
    busy: false,
    targetLanguage: "",
    models: [], // from /info: name, source_language, target_language, config, metrics
    model: "",
    heads: null, // a Transformer's {layers, heads, alignment_layer}; null for an RNN
    view: "default", // which matrix to draw: "default", "L" (layer L's average) or "L.H"
    items: [], // the last answer's sentences, redrawn when the view changes
  };

  // ---------------------------------------------------------------- colour scale
  // Light to dark, so that a cell's darkness is its weight (matches the legend bar).
  const RAMP = [
    [247, 249, 253], [219, 227, 247], [169, 185, 236], [112, 135, 223],
    [68, 88, 201], [44, 54, 156], [27, 31, 94],
  ];

  function colour(weight) {
    const w = Math.min(1, Math.max(0, Number(weight) || 0));
    const x = w * (RAMP.length - 1);
    const i = Math.min(Math.floor(x), RAMP.length - 2);
    const f = x - i;
    const rgb = RAMP[i].map((c, k) => Math.round(c + (RAMP[i + 1][k] - c) * f));
    return `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})`;
  }

  // ---------------------------------------------------------------------- tokens
  /** A subword piece as a DOM node: "▁" (word start) is kept but shown quietly, and special
   * tokens such as </s> get their own style. textContent stays the piece itself. */
  function tokenNode(piece) {
    const span = document.createElement("span");
    span.className = "token";
    if (/^<\/?[A-Za-z]+>$/.test(piece)) {
      span.classList.add("special");
      span.textContent = piece;
    } else if (piece.startsWith("▁")) {
      const marker = document.createElement("span");
      marker.className = "ws";
      marker.textContent = "▁";
      span.append(marker, piece.slice(1));
    } else {
      span.textContent = piece;
    }
    return span;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ------------------------------------------------------------------ model info
  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response.json();
  }

  function formatCount(n) {
    if (typeof n !== "number") return "—";
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(0)} k`;
    return String(n);
  }

  async function loadInfo() {
    try {
      const info = await getJSON("/info");
      state.models = info.models ?? [{ name: info.checkpoint, ...info }];
      Object.assign(state.limits, info.limits ?? {});
      fillModels(info.default_model ?? state.models[0].name);
      fillBeams();
      setStatus("ready", "ready");
    } catch (error) {
      fillBeams();
      try {
        const health = await getJSON("/health");
        $("#model-name").textContent = health.checkpoint;
        $("#model-score").textContent = health.score;
        $("#model-attention").textContent = health.attention_mode;
        setStatus("ready", "ready");
      } catch {
        setStatus("down", "unreachable");
        showError("Cannot reach the translation server",
                  `${error.message}. Is \`python translate.py serve\` still running?`);
      }
    }
    updateCounter();
  }

  function fillModels(chosen) {
    els.modelSelect.replaceChildren(...state.models.map((m) => {
      const option = element("option", "", `${m.name} (${m.source_language} → ${m.target_language})`);
      option.value = m.name;
      return option;
    }));
    els.direction.hidden = state.models.length < 2;
    // The model list is only needed when a swap cannot reach every model.
    els.modelSelect.parentElement.hidden = state.models.length <= 2 && reverseOf(
      state.models.find((m) => m.name === chosen)) !== undefined;
    applyModel(chosen);
  }

  function reverseOf(model) {
    if (!model) return undefined;
    return state.models.find((m) => m.source_language === model.target_language &&
                                    m.target_language === model.source_language);
  }

  /** Show model `name`: header facts, languages, labels, examples; later requests use it. */
  function applyModel(name) {
    const info = state.models.find((m) => m.name === name) ?? state.models[0];
    state.model = info.name;
    els.modelSelect.value = info.name;
    const model = info.config?.model ?? {};
    const data = info.config?.data ?? {};
    $("#model-name").textContent = info.name;
    document.title = `${info.name} · nmt`;
    const src = LANGUAGES[data.src] ?? data.src;
    const tgt = LANGUAGES[data.tgt] ?? data.tgt;
    if (src && tgt) {
      const corpus = Array.isArray(data.corpus) ? data.corpus.join("+") : data.corpus;
      $("#language-pair").textContent = `${src} → ${tgt}` + (corpus ? ` · trained on ${corpus}` : "");
      $("#source-label").textContent = `${src} text`;
      $("#source-language").textContent = src;
      $("#target-language").textContent = tgt;
    }
    $("#model-score").textContent = model.score ?? "—";
    $("#model-attention").textContent = model.attention_mode ?? "—";
    const bleu = info.metrics?.val_bleu;
    $("#model-bleu").textContent = typeof bleu === "number" ? bleu.toFixed(1) : "—";
    $("#model-params").textContent = formatCount(info.metrics?.parameters);
    state.targetLanguage = data.tgt ?? "";
    if (data.src) els.source.lang = data.src;
    const examples = EXAMPLES[data.src];
    if (examples) {
      const chips = els.examples.querySelectorAll(".chip");
      chips.forEach((chip, i) => { chip.textContent = examples[i] ?? chip.textContent; });
      els.source.placeholder = examples[0];
    }
    els.swap.disabled = reverseOf(info) === undefined;
    fillViews(info.attention);
  }

  /** The layer/head choice: shown for a Transformer (whose answers then carry "heads"). */
  function fillViews(attention) {
    const layers = attention?.layers;
    state.heads = layers ? attention : null;
    state.view = "default";
    els.viewChoice.hidden = !layers;
    if (!layers) return;
    const option = (value, text) => {
      const node = element("option", "", text);
      node.value = value;
      return node;
    };
    const options = [option("default",
      `layer ${attention.alignment_layer + 1}, average of heads (default)`)];
    for (let layer = 0; layer < layers; layer += 1) {
      options.push(option(String(layer), `layer ${layer + 1}, average of heads`));
      for (let head = 0; head < attention.heads; head += 1) {
        options.push(option(`${layer}.${head}`, `layer ${layer + 1}, head ${head + 1}`));
      }
    }
    els.viewSelect.replaceChildren(...options);
    els.viewSelect.value = "default";
  }

  /** The [target][source] weights of `item` that the chosen view draws. */
  function matrixOf(item) {
    if (state.view === "default" || !item.heads?.length) return item.attention;
    const [layer, head] = state.view.split(".").map(Number);
    const perHead = item.heads[layer];
    if (head !== undefined && !Number.isNaN(head)) return perHead[head];
    return perHead[0].map((row, r) => row.map((_, c) =>
      perHead.reduce((sum, matrix) => sum + matrix[r][c], 0) / perHead.length));
  }

  /** Redraw the open heatmaps in the chosen view (closed ones are drawn when opened). */
  function redrawHeatmaps() {
    for (const details of els.heatmap.querySelectorAll("details.sentence")) {
      const body = details.querySelector(".grid-scroll");
      body.replaceChildren();
      if (details.open) body.append(heatmapGrid(state.items[Number(details.dataset.index)]));
    }
    hideTooltip();
  }

  /** Swap the direction, as online translators do: the translation becomes the input. */
  function swapDirection() {
    const reverse = reverseOf(state.models.find((m) => m.name === state.model));
    if (!reverse || state.busy) return;
    const translated = [...els.translation.querySelectorAll(".translation-text")]
      .map((node) => node.textContent);
    applyModel(reverse.name);
    if (translated.length && !els.output.hidden) {
      els.source.value = translated.join("\n");
      updateCounter();
      submit();
    } else {
      clearResults();
    }
  }

  function fillBeams() {
    const { max_beam: max, default_beam: chosen } = state.limits;
    const current = Number(els.beam.value) || chosen;
    els.beam.replaceChildren();
    for (let beam = 1; beam <= max; beam += 1) {
      const option = element("option", "", beam === 1 ? "1 (greedy)" : String(beam));
      option.value = String(beam);
      option.selected = beam === (current <= max ? current : chosen);
      els.beam.append(option);
    }
  }

  function setStatus(stateName, text) {
    els.status.dataset.state = stateName;
    els.statusText.textContent = text;
  }

  // ----------------------------------------------------------------- translating
  function sentencesOf(text) {
    return text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  }

  function updateCounter() {
    const lines = sentencesOf(els.source.value);
    const longest = Math.max(0, ...lines.map((line) => line.length));
    let text = "";
    if (lines.length > 1) text = `${lines.length} lines`;
    else if (lines.length === 1) text = `${lines[0].length} characters`;
    if (longest > state.limits.max_sentence_chars) {
      text += ` · a line is over ${state.limits.max_sentence_chars} characters`;
    }
    els.counter.textContent = text;
  }

  async function submit() {
    if (state.busy) return;
    updateCounter();
    const lines = sentencesOf(els.source.value);
    const beam = Number(els.beam.value) || state.limits.default_beam;
    // One line: {"text"}; several: {"texts"}. An empty box is sent too, so that the
    // server's own message explains what is wrong.
    const body = lines.length > 1 ? { texts: lines, beam } : { text: lines[0] ?? "", beam };
    if (state.model) body.model = state.model;
    if (state.heads) body.heads = true;
    setBusy(true);
    hideError();
    const started = performance.now();
    try {
      const response = await fetch("/translate", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
      });
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      if (!response.ok || !data || data.error) {
        const status = data?.error?.status ?? response.status;
        const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
        showError(`The server refused the request (${status})`, message);
        clearResults();
        return;
      }
      render(data, performance.now() - started);
    } catch (error) {
      showError("Cannot reach the translation server",
                `${error.message}. Is \`python translate.py serve\` still running?`);
      clearResults();
    } finally {
      setBusy(false);
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    els.button.disabled = busy;
    els.button.classList.toggle("loading", busy);
    els.button.setAttribute("aria-busy", String(busy));
    els.buttonLabel.textContent = busy ? "Translating…" : "Translate";
    document.body.classList.toggle("busy", busy);
  }

  function showError(title, message) {
    els.error.replaceChildren(element("strong", "", title),
                              element("span", "error-message", message));
    els.error.hidden = false;
  }

  function hideError() {
    els.error.hidden = true;
    els.error.replaceChildren();
  }

  function clearResults() {
    els.output.hidden = true;
    els.heatmapCard.hidden = true;
    els.translation.replaceChildren();
    els.heatmap.replaceChildren();
    hideTooltip();
  }

  // -------------------------------------------------------------------- results
  function render(data, roundTrip) {
    // One translated line per input line; one heatmap per sentence of every line.
    const items = data.translations;
    state.items = items;
    const lines = data.lines ?? items.map((item) => ({ translation: item.translation }));
    const many = lines.length > 1;
    els.translation.classList.toggle("many", many);
    els.translation.replaceChildren(...lines.map((entry, index) => {
      const line = element("div", "translation-line");
      if (many) line.append(element("span", "index", String(index + 1)));
      const text = element("p", "translation-text", entry.translation);
      if (state.targetLanguage) text.lang = state.targetLanguage;
      line.append(text);
      return line;
    }));
    const counts = [];
    if (many) counts.push(`${lines.length} lines`);
    if (items.length > 1) counts.push(`${items.length} sentences`);
    const prefix = counts.length ? `${counts.join(", ")} · ` : "";
    els.meta.textContent = `${prefix}beam ${data.beam} · ${Math.round(data.milliseconds)} ms ` +
      `on the server (${Math.round(roundTrip)} ms in all)`;
    els.output.hidden = false;
    els.heatmapCard.hidden = false;
    hideTooltip();
    const perLine = {};
    items.forEach((item) => { perLine[item.line ?? 0] = (perLine[item.line ?? 0] ?? 0) + 1; });
    els.heatmap.replaceChildren(...items.map((item, index) =>
      sentenceFigure(item, index, sentenceLabel(item, index, many, perLine))));
    if (items.length > OPEN_HEATMAPS) {
      els.heatmap.append(element("p", "more-note",
        `The heatmaps of the first ${OPEN_HEATMAPS} sentences are open; click a sentence ` +
        "to open or close its heatmap."));
    }
  }

  /** "2." for the second line, "2.1" for the first sentence of a line of several. */
  function sentenceLabel(item, index, many, perLine) {
    const line = item.line ?? index;
    if ((perLine[line] ?? 1) > 1) return `${line + 1}.${(item.sentence ?? 0) + 1} `;
    return many ? `${line + 1}. ` : "";
  }

  function sentenceFigure(item, index, label) {
    const details = element("details", "sentence");
    details.dataset.index = String(index);
    const summary = element("summary");
    const pair = element("span", "sentence-pair");
    if (label) pair.append(element("span", "index", label));
    pair.append(element("span", "", item.source), element("span", "arrow", "→"),
                element("strong", "", item.translation));
    const stats = element("span", "sentence-stats",
      `${item.target_tokens.length} × ${item.source_tokens.length} tokens · ` +
      `score ${item.score.toFixed(2)} · log p ${item.log_prob.toFixed(2)}`);
    summary.append(pair, stats);
    if (item.truncated) {
      const badge = element("span", "badge", "truncated at the length limit");
      summary.append(badge);
    }
    const body = element("div", "grid-scroll");
    details.append(summary, body);
    const draw = () => {
      if (details.open && !body.firstChild) body.append(heatmapGrid(item));
    };
    details.addEventListener("toggle", draw);
    if (index < OPEN_HEATMAPS) {
      details.open = true;
      // Drawn at once (not on the asynchronous toggle event) so that it can be measured.
      queueMicrotask(draw);
    }
    return details;
  }

  function cellSize(columns) {
    const width = els.heatmap.clientWidth || 800;
    const free = width - 190; // row labels and margin
    return Math.max(MIN_CELL, Math.min(MAX_CELL, Math.floor(free / columns) - 1));
  }

  function heatmapGrid(item) {
    const sources = item.source_tokens;
    const targets = item.target_tokens;
    const weights = matrixOf(item);
    const grid = element("div", "heatmap");
    grid.setAttribute("role", "img");
    grid.setAttribute("aria-label",
      `attention of ${targets.length} target tokens over ${sources.length} source tokens`);
    grid.style.setProperty("--cell", `${cellSize(sources.length)}px`);
    grid.style.gridTemplateColumns = `auto repeat(${sources.length}, var(--cell))`;

    grid.append(element("span", "axis-title", "target ↓   source →"));
    sources.forEach((piece, col) => {
      const label = element("div", "col-label");
      label.dataset.col = String(col);
      label.append(tokenNode(piece));
      grid.append(label);
    });
    targets.forEach((target, row) => {
      const label = element("div", "row-label");
      label.dataset.row = String(row);
      label.append(tokenNode(target));
      grid.append(label);
      const values = weights[row] ?? [];
      let best = 0;
      values.forEach((w, col) => { if (w > values[best]) best = col; });
      sources.forEach((source, col) => {
        const weight = Number(values[col] ?? 0);
        const cell = element("div", "cell");
        cell.dataset.row = String(row);
        cell.dataset.col = String(col);
        cell.dataset.source = source;
        cell.dataset.target = target;
        cell.dataset.weight = String(weight);
        if (col === best) {
          cell.dataset.argmax = "true";
          if (state.mode === "argmax") cell.classList.add("marked");
        }
        cell.style.backgroundColor = colour(weight);
        grid.append(cell);
      });
    });
    return grid;
  }

  // ------------------------------------------------------------------------ mode
  function setMode(mode) {
    state.mode = mode;
    const argmax = mode === "argmax";
    els.toggle.dataset.mode = mode;
    els.toggle.setAttribute("aria-checked", String(argmax));
    els.heatmap.dataset.mode = mode;
    els.heatmapCard.classList.toggle("argmax", argmax);
    for (const cell of els.heatmap.querySelectorAll('.cell[data-argmax="true"]')) {
      cell.classList.toggle("marked", argmax);
    }
  }

  // --------------------------------------------------------------------- tooltip
  let hovered = null;

  function showTooltip(cell) {
    if (hovered === cell) return;
    clearHover();
    hovered = cell;
    cell.classList.add("focus");
    const grid = cell.parentElement;
    const { row, col } = cell.dataset;
    grid.querySelector(`.row-label[data-row="${row}"]`)?.classList.add("hover");
    grid.querySelector(`.col-label[data-col="${col}"]`)?.classList.add("hover");

    const weight = Number(cell.dataset.weight);
    const tip = els.tooltip;
    tip.querySelector(".tip-source").replaceChildren(tokenNode(cell.dataset.source));
    tip.querySelector(".tip-target").replaceChildren(tokenNode(cell.dataset.target));
    tip.querySelector(".tip-weight").textContent =
      `${weight.toFixed(4)} (${(100 * weight).toFixed(1)}%)`;
    tip.querySelector(".tip-bar span").style.width = `${(100 * weight).toFixed(1)}%`;
    tip.hidden = false;
    placeTooltip();
  }

  function placeTooltip() {
    if (!hovered) return;
    const tip = els.tooltip;
    const rect = hovered.getBoundingClientRect();
    const box = tip.getBoundingClientRect();
    let left = rect.right + 10;
    if (left + box.width > window.innerWidth - 8) left = rect.left - box.width - 10;
    let top = rect.top + rect.height / 2 - box.height / 2;
    top = Math.max(8, Math.min(top, window.innerHeight - box.height - 8));
    tip.style.left = `${Math.max(8, left)}px`;
    tip.style.top = `${top}px`;
  }

  function clearHover() {
    if (!hovered) return;
    hovered.classList.remove("focus");
    for (const label of hovered.parentElement?.querySelectorAll(".hover") ?? []) {
      label.classList.remove("hover");
    }
    hovered = null;
  }

  function hideTooltip() {
    clearHover();
    els.tooltip.hidden = true;
  }

  // ---------------------------------------------------------------------- wiring
  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  els.source.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });
  els.source.addEventListener("input", updateCounter);
  for (const chip of document.querySelectorAll("#examples .chip")) {
    chip.addEventListener("click", () => {
      els.source.value = chip.textContent;
      updateCounter();
      submit();
    });
  }
  els.toggle.addEventListener("click", () => setMode(state.mode === "soft" ? "argmax" : "soft"));
  els.swap.addEventListener("click", swapDirection);
  els.viewSelect.addEventListener("change", () => {
    state.view = els.viewSelect.value;
    redrawHeatmaps();
  });
  els.modelSelect.addEventListener("change", () => {
    applyModel(els.modelSelect.value);
    clearResults();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key.toLowerCase() === "s" && event.ctrlKey && event.shiftKey) {
      event.preventDefault();
      swapDirection();
    }
  });
  els.heatmap.addEventListener("mouseover", (event) => {
    const cell = event.target.closest?.(".cell");
    if (cell) showTooltip(cell);
    else hideTooltip();
  });
  els.heatmap.addEventListener("mouseleave", hideTooltip);
  window.addEventListener("scroll", placeTooltip, { passive: true });
  window.addEventListener("resize", () => {
    for (const grid of els.heatmap.querySelectorAll(".heatmap")) {
      const columns = grid.querySelectorAll(".col-label").length;
      grid.style.setProperty("--cell", `${cellSize(columns)}px`);
    }
  });

  setMode("soft");
  loadInfo();
  els.source.focus();
})();
