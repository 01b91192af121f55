// The digit page: draw on the canvas (pointer events: mouse, pen and touch alike) or pick a
// photo, send it to POST /recognize (or POST /read for a number), show the answer and the
// 28×28 the model received. Plain JavaScript, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const main = $("main");
  const urls = {
    recognize: main.dataset.recognizeUrl,
    read: main.dataset.readUrl,
    ready: main.dataset.readyUrl,
    feedback: main.dataset.feedbackUrl,
  };

  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const PAPER = "#ffffff";
  const INK = "#111111";
  // About the stroke width of MNIST digits (2–3 px of 28) at the canvas' 280 px.
  const LINE_WIDTH = pad.width / 13;
  // Live answers: a draft this long after the pen last lifted; the drawing counts as
  // finished (the logged request, the one feedback can label) after FINAL_DELAY_MS.
  const LIVE_DELAY_MS = 300;
  const FINAL_DELAY_MS = 1500;
  const STRIP_LENGTH = 8;
  const JSON_TYPE = "application/json";
  const READY_POLL_MS = 60000;

  const state = {
    hasInk: false,
    drawing: false,
    last: null,
    ink: 0, // bumped on every change of the drawing: answers for an older one are stale
    seq: 0, // requests sent
    finalSeq: 0, // the last request sent that was not a draft
    applied: 0, // the newest request whose answer (or error) is on screen
    draftInFlight: false,
    draftQueued: false,
    liveTimer: null,
    finalTimer: null,
    finalInk: -1, // the drawing last sent as a final request
    result: null, // the answer on screen: {kind, digit, number, recordId, token, entry}
    previewUrl: null,
    canRead: false,
    history: [],
  };

  // ---------------------------------------------------------------- drawing

  function resetPad() {
    // Opaque paper, so the PNG is dark-on-light rather than ink on transparency.
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    state.hasInk = false;
    state.ink += 1;
    stopTimers();
  }

  function canvasPoint(ev) {
    // The canvas is scaled by CSS on small screens: map client pixels to canvas pixels.
    const box = pad.getBoundingClientRect();
    return {
      x: ((ev.clientX - box.left) * pad.width) / box.width,
      y: ((ev.clientY - box.top) * pad.height) / box.height,
    };
  }

  function inked() {
    state.hasInk = true;
    state.ink += 1;
  }

  function dot(p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, LINE_WIDTH / 2, 0, Math.PI * 2);
    ctx.fill();
    inked();
  }

  function lineTo(p) {
    ctx.beginPath();
    ctx.moveTo(state.last.x, state.last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    state.last = p;
    inked();
  }

  function stopTimers() {
    clearTimeout(state.liveTimer);
    clearTimeout(state.finalTimer);
    state.liveTimer = state.finalTimer = null;
  }

  function strokeEnded() {
    if (!state.hasInk || !$("live").checked) return;
    stopTimers();
    state.liveTimer = setTimeout(sendDraft, LIVE_DELAY_MS);
    state.finalTimer = setTimeout(() => recognizeDrawing({ auto: true }), FINAL_DELAY_MS);
  }

  pad.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    pad.focus({ preventScroll: true });
    pad.setPointerCapture(ev.pointerId);
    stopTimers();
    state.drawing = true;
    state.last = canvasPoint(ev);
    dot(state.last);
    hideMessage();
  });

  pad.addEventListener("pointermove", (ev) => {
    if (!state.drawing) return;
    ev.preventDefault();
    // Coalesced events keep fast strokes smooth where the browser batches moves.
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [];
    for (const e of events.length ? events : [ev]) lineTo(canvasPoint(e));
  });

  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    pad.addEventListener(type, () => {
      const was = state.drawing;
      state.drawing = false;
      state.last = null;
      if (was) strokeEnded();
    });
  }

  // ---------------------------------------------------------------- messages

  function showMessage(text, kind = "error", scroll = true) {
    const el = $("message");
    el.textContent = text;
    el.className = `message ${kind}`;
    el.hidden = false;
    // On a phone the result card is below the pad: bring the message into view (not for
    // a live guess: the page must not move under a finger that is drawing).
    if (scroll && el.getBoundingClientRect().bottom > window.innerHeight) {
      el.scrollIntoView({ behavior: "smooth", block: "nearest" });
    }
  }

  function hideMessage() {
    $("message").hidden = true;
  }

  function setBusy(busy) {
    $("result-card").setAttribute("aria-busy", String(busy));
    // The answer on screen stays while the next one is on its way (live drawing would
    // otherwise flicker); the placeholder says "Recognising…" only when there is none.
    $("busy").hidden = !busy || state.result !== null;
    $("placeholder").hidden = busy || state.result !== null;
  }

  // ---------------------------------------------------------------- talking to the service

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  function errorText(response, body) {
    const err = body && body.error;
    if (err && err.code === "no_digit") {
      return "No digit found in that image. Draw or photograph one dark digit on a plain background.";
    }
    if (err && err.code === "multiple_digits" && state.canRead) {
      const count = Number.isInteger(err.count) ? `${err.count} digits` : "several digits";
      return `That looks like ${count} side by side, not one. To read them as a number, press “Read a number”.`;
    }
    if (err && err.message) return `${err.message} (${response.status})`;
    return `The service answered ${response.status} ${response.statusText}.`;
  }

  // One request: `what` is {url, body, contentType, previewUrl, draft, number, ink}.
  // Answers are shown only if no later request's answer is shown already and, for a
  // drawing, the drawing has not changed since: stale answers are dropped.
  async function send(what) {
    const seq = (state.seq += 1);
    if (what.draft) state.draftInFlight = true;
    else {
      state.finalSeq = seq;
      hideMessage();
    }
    setBusy(true);
    const query = what.draft ? "?return_input=true&draft=true" : "?return_input=true";
    const headers = what.contentType ? { "Content-Type": what.contentType } : {};
    let response = null;
    let json = null;
    try {
      response = await fetch(what.url + query, { method: "POST", body: what.body, headers });
      json = await readJson(response);
    } catch {
      response = null;
    }
    if (what.draft) {
      state.draftInFlight = false;
      if (state.draftQueued) {
        state.draftQueued = false;
        setTimeout(sendDraft, 0);
      }
    }
    // Stale: older than the answer on screen, a draft overtaken by a final request (an upload
    // or the finished drawing), or for a drawing that has changed since.
    const stale =
      seq < state.applied ||
      (what.draft && seq < state.finalSeq) ||
      (what.ink !== undefined && what.ink !== state.ink);
    if (stale) {
      if (seq === state.seq) setBusy(false);
      return;
    }
    state.applied = seq;
    setBusy(false);
    if (response === null || !response.ok || !json) {
      // The old answer belongs to another image: it must not stand beside this error.
      clearResult();
      const text =
        response === null
          ? "Could not reach the service. Check the connection and try again."
          : errorText(response, json);
      showMessage(text, "error", !what.draft);
      $("live-answer").textContent = "no answer";
      if (response !== null) checkService();
      return;
    }
    if (!what.draft) hideMessage();
    showResult(json, what);
  }

  function sendDraft() {
    if (!state.hasInk || state.ink === state.finalInk) return;
    if (state.draftInFlight) {
      state.draftQueued = true; // one in flight; the newest drawing goes when it is back
      return;
    }
    const [body, previewUrl] = drawingBody();
    send({ url: urls.recognize, body, contentType: JSON_TYPE, previewUrl, ink: state.ink, draft: true });
  }

  // The drawing as JSON: one PNG encoding serves as the request and the preview (a canvas'
  // toBlob beside toDataURL would encode it twice, and its first call is slow in Chromium).
  function drawingBody() {
    const dataUrl = pad.toDataURL("image/png");
    return [JSON.stringify({ image: dataUrl }), dataUrl];
  }

  function recognizeDrawing({ auto = false, number = false } = {}) {
    stopTimers();
    if (!state.hasInk) {
      if (auto) return;
      // A blank canvas would only earn a 422; say what to do instead of asking.
      showMessage(
        number ? "Draw a number first, or upload a photo of one." : "Draw a digit first, or upload a photo of one.",
        "info",
      );
      pad.focus();
      return;
    }
    const finalKind = number ? "number" : "digit";
    // The same drawing already answered for good: nothing new to log.
    if (state.ink === state.finalInk && state.result && state.result.kind === finalKind) return;
    state.finalInk = state.ink;
    const [body, previewUrl] = drawingBody();
    const url = number ? urls.read : urls.recognize;
    send({ url, body, contentType: JSON_TYPE, previewUrl, ink: state.ink, number, auto });
  }

  function recognizeUpload(file) {
    if (!file) return;
    stopTimers();
    state.previewUrl = URL.createObjectURL(file);
    const form = new FormData();
    form.append("image", file, file.name);
    // No Content-Type: the browser sets multipart/form-data with its boundary.
    send({ url: urls.recognize, body: form, contentType: null, previewUrl: state.previewUrl });
  }

  // ---------------------------------------------------------------- the answer

  const percent = (p) => `${(p * 100).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)} %`;

  function renderBars(probabilities, digit) {
    const list = $("bars");
    list.replaceChildren();
    probabilities.forEach((p, d) => {
      const item = document.createElement("li");
      item.className = d === digit ? "bar top" : "bar";
      item.setAttribute("aria-label", `${d}: ${percent(p)}`);
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = String(d);
      const track = document.createElement("span");
      track.className = "bar-track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = percent(p);
      item.append(label, track, value);
      list.append(item);
    });
  }

  function renderNumberDigits(digits) {
    const list = $("number-digits");
    list.replaceChildren();
    for (const d of digits) {
      const item = document.createElement("li");
      item.textContent = String(d.digit);
      const small = document.createElement("small");
      small.textContent = percent(d.confidence);
      item.append(small);
      list.append(item);
    }
  }

  function showResult(result, what) {
    const number = Boolean(what.number);
    const kind = what.draft ? "draft" : number ? "number" : "digit";
    const answer = number ? String(result.number) : String(result.digit);
    const confidence = number
      ? Math.min(...result.digits.map((d) => d.confidence))
      : result.confidence;
    state.result = {
      kind,
      digit: number ? null : result.digit,
      number: number ? answer : null,
      // Only a final answer carries the token that lets its record be labelled.
      recordId: result.record_id || null,
      token: result.feedback_token || null,
      fromPad: what.ink !== undefined,
      entry: null,
    };
    $("result").dataset.kind = kind;
    $("digit").textContent = answer;
    $("digit").classList.toggle("long", answer.length > 2);
    $("live-badge").hidden = kind !== "draft";
    $("confidence").textContent = percent(confidence);
    $("low-confidence").hidden = !result.low_confidence;
    $("chart").hidden = number;
    if (!number) renderBars(result.probabilities, result.digit);
    $("number-digits").hidden = !number;
    if (number) renderNumberDigits(result.digits);
    showModel(result.model);
    $("preview").src = what.previewUrl || "";
    $("preview").hidden = !what.previewUrl;
    const input = result.model_input ? `data:image/png;base64,${result.model_input}` : null;
    $("model-input").src = input || "";
    $("model-input-figure").hidden = !input;
    $("draft-note").hidden = kind !== "draft";
    // Beside the pad too, where a phone user drawing can see it without scrolling.
    $("live-answer").textContent = `${kind === "draft" ? "…" : "→"} ${answer} · ${percent(confidence)}`;
    resetFeedback();
    $("placeholder").hidden = true;
    $("busy").hidden = true;
    $("result").hidden = false;
    if (kind === "draft") return; // live guesses are not announced or kept
    $("announce").textContent =
      (number ? `It reads ${answer}` : `It is a ${answer}`) +
      `, ${percent(confidence)} confident` +
      (result.low_confidence ? ", but not sure." : ".");
    state.result.entry = remember(what.previewUrl, input, answer, confidence);
    // On a phone the answer is below the pad: bring it up rather than leave it unseen
    // (not when the drawing finished by itself: the line beside the pad shows it).
    const card = $("result-card");
    if (!what.auto && card.getBoundingClientRect().top > window.innerHeight * 0.6) {
      card.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  function showModel(model) {
    $("model-name").textContent = model ? model.name : "?";
    $("model-version").textContent = model ? model.version : "?";
    const family = model && model.family;
    $("model-family").textContent = family || "";
    $("model-family-part").hidden = !family;
  }

  function clearResult() {
    state.result = null;
    $("result").hidden = true;
    $("result").dataset.kind = "none";
    $("placeholder").hidden = false;
    $("busy").hidden = true;
    $("announce").textContent = "";
    $("live-answer").textContent = "";
  }

  // ---------------------------------------------------------------- recent drawings

  function remember(previewUrl, inputUrl, answer, confidence) {
    const entry = { previewUrl, inputUrl, answer, confidence, verdict: null };
    state.history.unshift(entry);
    for (const old of state.history.splice(STRIP_LENGTH)) {
      if (old.previewUrl && old.previewUrl.startsWith("blob:")) URL.revokeObjectURL(old.previewUrl);
    }
    renderStrip();
    return entry;
  }

  function renderStrip() {
    const strip = $("strip");
    strip.replaceChildren();
    for (const entry of state.history) {
      const item = document.createElement("li");
      const img = document.createElement("img");
      img.src = entry.previewUrl || entry.inputUrl || "";
      img.alt = "";
      img.width = 56;
      img.height = 56;
      const label = document.createElement("span");
      label.className = "strip-answer";
      label.textContent = entry.answer;
      const note = document.createElement("small");
      note.textContent =
        entry.verdict === null
          ? percent(entry.confidence)
          : entry.verdict === true
            ? "✓ right"
            : `✗ was ${entry.verdict}`;
      if (entry.verdict !== null) item.className = entry.verdict === true ? "right" : "wrong";
      item.setAttribute(
        "aria-label",
        `${entry.answer}, ${percent(entry.confidence)}` +
          (entry.verdict === null ? "" : entry.verdict === true ? ", marked right" : `, it was ${entry.verdict}`),
      );
      item.append(img, label, note);
      strip.append(item);
    }
    $("recent").hidden = state.history.length === 0;
  }

  // ---------------------------------------------------------------- feedback

  // What "right" labels the answer with: the digit, or the number as a string of digits
  // (POST /feedback takes a /read answer's label that way).
  const answered = (r) => (r.kind === "number" ? r.number : r.digit);

  function resetFeedback() {
    const r = state.result;
    const labelled = Boolean(r && r.kind !== "draft" && r.recordId && r.token);
    const number = Boolean(r && r.kind === "number");
    $("feedback").hidden = !r;
    $("feedback-status").textContent = "";
    $("right-digit").textContent = r ? String(answered(r)) : "?";
    $("right").disabled = !labelled;
    $("right").setAttribute("aria-pressed", "false");
    $("wrong").hidden = number;
    $("wrong-number").hidden = !number;
    $("true-number").value = "";
    $("true-number").disabled = !labelled;
    $("send-number").disabled = !labelled;
    for (const button of $("feedback-digits").querySelectorAll("button")) {
      const label = Number(button.dataset.label);
      button.disabled = !labelled || label === r.digit;
      button.setAttribute("aria-pressed", "false");
    }
  }

  async function sendFeedback(label, button) {
    const status = $("feedback-status");
    const r = state.result;
    if (!r || !r.recordId || !r.token) return;
    status.textContent = "Sending…";
    let response;
    try {
      response = await fetch(urls.feedback, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ record_id: r.recordId, feedback_token: r.token, label }),
      });
    } catch {
      status.textContent = "Could not reach the service; the answer was not sent.";
      return;
    }
    const json = await readJson(response);
    if (response.ok) {
      for (const b of $("feedback").querySelectorAll("button")) {
        b.setAttribute("aria-pressed", String(b === button));
      }
      const confirmed = label === answered(r);
      status.textContent = confirmed ? `Thank you! Confirmed as ${label}.` : `Thank you! Recorded as ${label}.`;
      if (r.entry) {
        r.entry.verdict = confirmed ? true : label;
        renderStrip();
      }
    } else if (response.status === 404) {
      status.textContent = "The service no longer knows this prediction, so the answer was not saved.";
    } else {
      status.textContent = `Not saved: ${errorText(response, json)}`;
    }
  }

  function buildFeedbackButtons() {
    const box = $("feedback-digits");
    for (let d = 0; d <= 9; d += 1) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = String(d);
      button.dataset.label = String(d);
      button.setAttribute("aria-label", `It was ${d}`);
      button.addEventListener("click", () => sendFeedback(d, button));
      box.append(button);
    }
    const right = $("right");
    right.addEventListener("click", () => {
      if (state.result && state.result.kind !== "draft") sendFeedback(answered(state.result), right);
    });
    $("wrong-number").addEventListener("submit", (ev) => {
      ev.preventDefault(); // stays on the page: the label goes by fetch
      const r = state.result;
      const typed = $("true-number").value.trim();
      if (!r || r.kind !== "number") return;
      if (!/^[0-9]+$/.test(typed) || typed.length !== r.number.length) {
        // A number read with the wrong count of digits cannot be labelled digit by digit.
        $("feedback-status").textContent = `Type the ${r.number.length} digits of the number.`;
        return;
      }
      sendFeedback(typed, $("send-number"));
    });
  }

  // ---------------------------------------------------------------- clear / start again

  function clearDrawing() {
    resetPad();
    hideMessage();
    // The answer belongs to the drawing just wiped (the strip keeps it); an upload's stays.
    if (state.result && state.result.fromPad) clearResult();
  }

  function startAgain() {
    resetPad();
    hideMessage();
    $("upload").value = "";
    clearResult();
    pad.focus();
  }

  // ---------------------------------------------------------------- the service's state

  async function checkService() {
    const line = $("status-line");
    const note = $("service-note");
    try {
      const response = await fetch(urls.ready);
      const json = await readJson(response);
      note.hidden = true;
      if (response.ok && json && json.model) {
        const family = json.model.family ? ` (family ${json.model.family})` : "";
        line.textContent = `Serving model ${json.model.name} version ${json.model.version}${family}.`;
        if (json.status === "degraded") {
          // Still answering, with an older model than the operator asked for.
          const why = json.degraded && json.degraded.message ? `: ${json.degraded.message}` : ".";
          note.textContent = `Degraded service — an older model is answering${why}`;
          note.hidden = false;
        }
      } else if (json && json.error && json.error.code === "storage_unavailable") {
        line.textContent = "Requests cannot be stored right now, so none is answered; try again later.";
      } else {
        line.textContent = "No model is loaded yet; predictions will fail until one is.";
      }
    } catch {
      line.textContent = "The service cannot be reached.";
    }
  }

  function offerRead() {
    // "Read a number" only where this service has POST /read (the page is told its URL).
    state.canRead = Boolean(urls.read);
    $("read-row").hidden = !state.canRead;
    $("read-hint").hidden = !state.canRead;
  }

  // ---------------------------------------------------------------- wiring

  $("recognize").addEventListener("click", () => recognizeDrawing());
  $("read").addEventListener("click", () => recognizeDrawing({ number: true }));
  $("clear").addEventListener("click", clearDrawing);
  $("again").addEventListener("click", startAgain);
  $("upload").addEventListener("change", (ev) => recognizeUpload(ev.target.files[0]));
  $("live").addEventListener("change", (ev) => {
    if (!ev.target.checked) stopTimers();
    else strokeEnded();
  });

  pad.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      recognizeDrawing();
    } else if (ev.key === "Delete" || ev.key === "Backspace") {
      ev.preventDefault();
      clearDrawing();
    }
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !ev.defaultPrevented) clearDrawing();
  });

  resetPad();
  buildFeedbackButtons();
  checkService();
  setInterval(checkService, READY_POLL_MS);
  offerRead();
  main.dataset.ready = "true"; // lets tests know the script has wired everything up
})();
