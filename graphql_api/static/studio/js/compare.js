// What differs: a draft's config against a published one, and one analysis result against another.

export const PROMPTS = [
  ["summaryPrompt", "Summary prompt", "What the summary should say."],
  ["successfulPrompt", "Successful prompt", "When the conversation counts as successful."],
  ["userSentimentPrompt", "User sentiment prompt", "How to judge the user's sentiment."],
];

const FIELD_PROPS = ["type", "description", "examples", "choices", "required"];

function normal(value) {
  if (value === undefined || value === "") return null;
  if (Array.isArray(value)) return value.length ? value.map(normal) : null;
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((key) => [key, normal(value[key])]));
  }
  return value;
}

/** Equal as the server would store them: empty lists and strings are "nothing", key order doesn't matter. */
export function same(a, b) {
  return JSON.stringify(normal(a)) === JSON.stringify(normal(b));
}

/** The properties (type, description, ...) in which two data fields differ. */
export function fieldChanges(field, other) {
  return FIELD_PROPS.filter((prop) => !same(field[prop], other[prop]));
}

/** For each name of either list: "added", "removed", "changed" (with the properties `changes` names) or "same". */
function diffByName(items, published, changes) {
  const before = new Map((published || []).map((item) => [item.name, item]));
  const diff = new Map();
  for (const item of items) {
    const old = before.get(item.name);
    if (!old) diff.set(item.name, { state: "added", props: [] });
    else {
      const props = changes(item, old);
      diff.set(item.name, { state: props.length ? "changed" : "same", props });
    }
  }
  for (const name of before.keys()) if (!diff.has(name)) diff.set(name, { state: "removed", props: [] });
  return diff;
}

/** Data fields by name: "added", "removed", "changed" (with the properties) or "same". */
export function dataFieldDiff(fields, published) {
  return diffByName(fields, published, fieldChanges);
}

// How success can be judged: the yes/no prompt ("") or a rubric (RubricType).
export const RUBRIC_TYPES = [
  ["", "Yes / no: the successful prompt (default)"],
  ["PASS_FAIL", "Rubric: pass / fail"],
  ["NUMERIC", "Rubric: numeric scale"],
  ["PERCENTAGE", "Rubric: percentage"],
  ["LIKERT", "Rubric: Likert (agreement, 1 to 5)"],
  ["CHECKLIST", "Rubric: checklist of criteria"],
];
// Likert levels 1..5, as LikertLevel names them.
export const LIKERT = ["STRONGLY_DISAGREE", "DISAGREE", "NEUTRAL", "AGREE", "STRONGLY_AGREE"];
export const LIKERT_DEFAULT = 4;

/** A rubric as the editor holds it (numbers as the text of their inputs) from AnalysisConfig.successRubric. */
export function rubricForm(rubric) {
  const text = (n) => (n === null || n === undefined ? "" : String(n));
  if (!rubric) return { type: "", threshold: "", scaleMin: "", scaleMax: "", criteria: [] };
  return {
    type: rubric.type, threshold: text(rubric.threshold), scaleMin: text(rubric.scaleMin), scaleMax: text(rubric.scaleMax),
    criteria: rubric.criteria.map((c) => ({ name: c.name, prompt: c.prompt })),
  };
}

/** The SuccessRubricInput of an edited rubric (only what its type takes), or null for the yes/no prompt. */
export function rubricInput(form) {
  if (!form.type) return null;
  const number = (text) => (String(text ?? "").trim() === "" ? null : Number(text));
  const input = { type: form.type };
  if (form.type !== "PASS_FAIL") input.threshold = number(form.threshold);
  if (form.type === "NUMERIC") Object.assign(input, { scaleMin: number(form.scaleMin), scaleMax: number(form.scaleMax) });
  if (form.type === "CHECKLIST") input.criteria = form.criteria.map((c) => ({ name: c.name.trim(), prompt: c.prompt.trim() }));
  return input;
}

/** Checklist criteria by name, as data fields are: "added", "removed", "changed" (prompt) or "same". */
export function criterionDiff(criteria, published) {
  return diffByName(criteria, published, (c, old) => (same(c.prompt, old.prompt) ? [] : ["prompt"]));
}

/**
 * The rows of a side-by-side comparison of two results: summary, successful, the success rubric's answer (when
 * either has one), sentiment, voicemail (calls), then each custom field (the draft's fields first), each with
 * whether it changed.
 */
export function resultRows(before, after, { voice = true, fieldNames = [] } = {}) {
  const rows = [
    { key: "summary", label: "Summary" },
    { key: "successful", label: "Successful" },
    { key: "userSentiment", label: "User sentiment" },
  ];
  if (voice) rows.push({ key: "inVoicemail", label: "In voicemail" });
  const names = [...fieldNames];
  for (const result of [before, after]) {
    for (const name of Object.keys(result?.customData || {})) if (!names.includes(name)) names.push(name);
  }
  if (before?.evaluation || after?.evaluation) rows.splice(2, 0, { key: "evaluation", label: "Success rubric" });
  const out = rows.map((row) => ({ ...row, before: before?.[row.key] ?? null, after: after?.[row.key] ?? null }));
  for (const name of names) {
    out.push({ key: `customData.${name}`, label: name, custom: true,
      before: before?.customData?.[name] ?? null, after: after?.customData?.[name] ?? null });
  }
  for (const row of out) row.changed = Boolean(before && after) && !same(row.before, row.after);
  return out;
}

/** A success outcome that a rerun turned around (both known and different). */
export function flipped(before, after) {
  return before?.successful != null && after?.successful != null && before.successful !== after.successful;
}
