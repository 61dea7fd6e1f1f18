// The console's only script: refresh the parts of a page marked data-live, and fill the takedown
// form's preset. Everything else is plain HTML forms, so the console works without it too.
"use strict";

const FINISHED = ["succeeded", "failed", "cancelled"];

function startLive(element) {
  const url = element.dataset.live;
  const every = Number(element.dataset.every || 2000);
  if (element.dataset.stopped === "true") return;
  const timer = setInterval(async () => {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (response.redirected || !response.ok) return;  // signed out or refused: leave the page as it is
      element.innerHTML = await response.text();
      const block = element.querySelector("[data-status]");
      if (block && FINISHED.includes(block.dataset.status)) {
        clearInterval(timer);  // a finished job no longer changes
        element.dataset.stopped = "true";
      }
    } catch (error) {
      // the server is restarting or the network is down: try again at the next tick
    }
  }, every);
}

function presetForm(form) {
  const concept = form.querySelector("#concept");
  const category = form.querySelector("#category");
  const preservation = form.querySelector("#preservation");
  const preset = form.querySelector("#preservation_preset");
  const help = form.querySelector("#category-help");
  let timer = null;
  async function refresh() {
    const option = category.options[category.selectedIndex];
    help.textContent = option ? option.dataset.description : "";
    const query = new URLSearchParams({ category: category.value, concept: concept.value });
    try {
      const response = await fetch(`${form.dataset.preset}?${query}`, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      const text = data.preservation.join("\n");
      // Only an untouched list follows the preset: what the moderator typed is never overwritten.
      if (preservation.value.trim() === "" || preservation.value === preset.value) {
        preservation.value = text;
      }
      preset.value = text;
      const epsilon = form.querySelector("#epsilon");
      if (epsilon) epsilon.placeholder = `preset: ${data.epsilon}`;
    } catch (error) { /* keep the form as it is */ }
  }
  category.addEventListener("change", refresh);
  concept.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 400); });
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(startLive);
  const form = document.querySelector("#takedown");
  if (form) presetForm(form);
});
