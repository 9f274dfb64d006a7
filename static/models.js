// Model picker: <select id="model-picker"> filled from GET /models (the server's default first).
// Its value goes into the offer ("model"), so a session starts on it; changing it while
// connected sends {"type": "config", "model"}, so one camera can be compared across models
// live (A/B). The server's config ack says which model is in force, and showModel() keeps
// the picker in line with it.
const picker = () => document.getElementById("model-picker");

/** Fill the picker; resolves to the /models list ([] if the server cannot say). */
export async function loadModels() {
  let models = [];
  try {
    const response = await fetch("/models");
    if (response.ok) models = (await response.json()).models || [];
  } catch (err) {
    return [];
  }
  const select = picker(), chosen = select.value;
  select.replaceChildren(...models.map((m) => new Option(
    `${m.name} · ${m.input_size ? m.input_size[1] : "?"} px · ${m.backend} ${m.precision}`, m.name)));
  if (models.some((m) => m.name === chosen)) select.value = chosen;
  select.disabled = models.length < 2;
  return models;
}

/** What the offer carries: the chosen model, if the picker has one. */
export function offerFields() {
  return picker().value ? { model: picker().value } : {};
}

/** The server acknowledged ``name`` as the model in force. */
export function showModel(name) {
  if (name && [...picker().options].some((o) => o.value === name)) picker().value = name;
}

/** Switch the live session when the user picks another model (``send`` drops it when not connected). */
export function onModelChange(send) {
  picker().addEventListener("change", () => send({ type: "config", model: picker().value }));
}
