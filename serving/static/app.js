// The digit page: draw on the canvas (pointer events: mouse, pen and touch alike) or pick a
// photo, send it to POST /recognize, show the answer. Plain JavaScript, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const main = $("main");
  const urls = {
    recognize: main.dataset.recognizeUrl,
    ready: main.dataset.readyUrl,
    feedback: main.dataset.feedbackUrl,
  };

  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const PAPER = "#ffffff";
  const INK = "#111111";
  // About the stroke width of MNIST digits (2–3 px of 28) at the canvas' 280 px.
  const LINE_WIDTH = pad.width / 13;

  const state = {
    hasInk: false,
    drawing: false,
    last: null,
    requestId: null,
    digit: null,
    busy: false,
    previewUrl: null,
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
  }

  function canvasPoint(ev) {
    // The canvas is scaled by CSS on small screens: map client pixels to canvas pixels.
    const box = pad.getBoundingClientRect();
    return {
      x: ((ev.clientX - box.left) * pad.width) / box.width,
      y: ((ev.clientY - box.top) * pad.height) / box.height,
    };
  }

  function dot(p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, LINE_WIDTH / 2, 0, Math.PI * 2);
    ctx.fill();
    state.hasInk = true;
  }

  function lineTo(p) {
    ctx.beginPath();
    ctx.moveTo(state.last.x, state.last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    state.last = p;
    state.hasInk = true;
  }

  pad.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    pad.focus({ preventScroll: true });
    pad.setPointerCapture(ev.pointerId);
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
      state.drawing = false;
      state.last = null;
    });
  }

  // ---------------------------------------------------------------- messages

  function showMessage(text, kind = "error") {
    const el = $("message");
    el.textContent = text;
    el.className = `message ${kind}`;
    el.hidden = false;
  }

  function hideMessage() {
    $("message").hidden = true;
  }

  function setBusy(busy) {
    state.busy = busy;
    $("result-card").setAttribute("aria-busy", String(busy));
    $("recognize").disabled = busy;
    $("busy").hidden = !busy;
    if (busy) {
      $("placeholder").hidden = true;
      $("result").hidden = true;
    }
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
    if (err && err.message) return `${err.message} (${response.status})`;
    return `The service answered ${response.status} ${response.statusText}.`;
  }

  async function recognize(body, contentType, previewUrl) {
    if (state.busy) return;
    hideMessage();
    setBusy(true);
    const headers = contentType ? { "Content-Type": contentType } : {};
    let response;
    try {
      response = await fetch(urls.recognize, { method: "POST", body, headers });
    } catch {
      setBusy(false);
      showPlaceholderIfEmpty();
      showMessage("Could not reach the service. Check the connection and try again.");
      return;
    }
    const json = await readJson(response);
    setBusy(false);
    if (!response.ok || !json) {
      showPlaceholderIfEmpty();
      showMessage(errorText(response, json));
      return;
    }
    showResult(json, previewUrl);
  }

  function showPlaceholderIfEmpty() {
    $("placeholder").hidden = state.requestId !== null;
    $("result").hidden = state.requestId === null;
  }

  function recognizeDrawing() {
    if (!state.hasInk) {
      // A blank canvas would only earn a 422; say what to do instead of asking.
      showMessage("Draw a digit first, or upload a photo of one.", "info");
      pad.focus();
      return;
    }
    const dataUrl = pad.toDataURL("image/png");
    pad.toBlob((blob) => recognize(blob, "image/png", dataUrl), "image/png");
  }

  function recognizeUpload(file) {
    if (!file) return;
    if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = URL.createObjectURL(file);
    const form = new FormData();
    form.append("image", file, file.name);
    // No Content-Type: the browser sets multipart/form-data with its boundary.
    recognize(form, null, state.previewUrl);
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

  function showResult(result, previewUrl) {
    state.requestId = result.request_id;
    // Only this answer carries the token that lets its record be labelled.
    state.recordId = result.record_id || null;
    state.feedbackToken = result.feedback_token || null;
    state.digit = result.digit;
    $("digit").textContent = String(result.digit);
    $("confidence").textContent = percent(result.confidence);
    $("low-confidence").hidden = !result.low_confidence;
    renderBars(result.probabilities, result.digit);
    $("model-name").textContent = result.model ? result.model.name : "?";
    $("model-version").textContent = result.model ? result.model.version : "?";
    $("preview").src = previewUrl || "";
    $("preview").hidden = !previewUrl;
    resetFeedback();
    $("placeholder").hidden = true;
    $("result").hidden = false;
    $("announce").textContent =
      `It is a ${result.digit}, ${percent(result.confidence)} confident` +
      (result.low_confidence ? ", but not sure." : ".");
    // On a phone the answer is below the pad: bring it up rather than leave it unseen.
    const card = $("result-card");
    if (card.getBoundingClientRect().top > window.innerHeight * 0.6) {
      card.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  // ---------------------------------------------------------------- feedback

  function resetFeedback() {
    $("feedback-status").textContent = "";
    for (const button of $("feedback-digits").querySelectorAll("button")) {
      const label = Number(button.dataset.label);
      button.disabled = label === state.digit;
      button.setAttribute("aria-pressed", "false");
    }
  }

  async function sendFeedback(label, button) {
    const status = $("feedback-status");
    if (!state.recordId || !state.feedbackToken) return;
    status.textContent = "Sending…";
    let response;
    try {
      response = await fetch(urls.feedback, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          record_id: state.recordId,
          feedback_token: state.feedbackToken,
          label,
        }),
      });
    } catch {
      status.textContent = "Could not reach the service; the correction was not sent.";
      return;
    }
    const json = await readJson(response);
    if (response.ok) {
      for (const b of $("feedback-digits").querySelectorAll("button")) {
        b.setAttribute("aria-pressed", String(b === button));
      }
      status.textContent = `Thank you! Recorded as ${label}.`;
    } else if (response.status === 404) {
      status.textContent =
        "The service no longer knows this prediction, so the correction was not saved.";
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
  }

  // ---------------------------------------------------------------- clear / start again

  function clearDrawing() {
    resetPad();
    hideMessage();
  }

  function startAgain() {
    resetPad();
    hideMessage();
    $("upload").value = "";
    state.requestId = null;
    state.digit = null;
    $("result").hidden = true;
    $("placeholder").hidden = false;
    $("announce").textContent = "";
    pad.focus();
  }

  // ---------------------------------------------------------------- model status

  async function showModelStatus() {
    const line = $("status-line");
    try {
      const response = await fetch(urls.ready);
      const json = await readJson(response);
      if (response.ok && json && json.model) {
        line.textContent = `Serving model ${json.model.name} version ${json.model.version}.`;
      } else if (json && json.error && json.error.code === "storage_unavailable") {
        line.textContent = "Requests cannot be stored right now, so none is answered; try again later.";
      } else {
        line.textContent = "No model is loaded yet; predictions will fail until one is.";
      }
    } catch {
      line.textContent = "The service cannot be reached.";
    }
  }

  // ---------------------------------------------------------------- wiring

  $("recognize").addEventListener("click", recognizeDrawing);
  $("clear").addEventListener("click", clearDrawing);
  $("again").addEventListener("click", startAgain);
  $("upload").addEventListener("change", (ev) => recognizeUpload(ev.target.files[0]));

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
  showModelStatus();
  main.dataset.ready = "true"; // lets tests know the script has wired everything up
})();
