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

/** For each field name of either list: "added", "removed", "changed" (with the properties) or "same". */
export function dataFieldDiff(fields, published) {
  const before = new Map((published || []).map((field) => [field.name, field]));
  const diff = new Map();
  for (const field of fields) {
    const old = before.get(field.name);
    if (!old) diff.set(field.name, { state: "added", props: [] });
    else {
      const props = fieldChanges(field, old);
      diff.set(field.name, { state: props.length ? "changed" : "same", props });
    }
  }
  for (const name of before.keys()) if (!diff.has(name)) diff.set(name, { state: "removed", props: [] });
  return diff;
}

/**
 * The rows of a side-by-side comparison of two results: summary, successful, sentiment, voicemail (calls),
 * then each custom field (the draft's fields first), each with whether it changed.
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
