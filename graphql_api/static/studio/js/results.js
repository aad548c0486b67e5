// How results are shown: two side by side, each value with the reason given for it, and a success rubric's answer.

import { h, show } from "./dom.js";
import { LIKERT, resultRows } from "./compare.js";

const CRITERION = { SUCCESS: "met", FAILURE: "not met", UNKNOWN: "can't tell" };
const PASS = { SUCCESS: "pass", FAILURE: "fail", UNKNOWN: "can't tell" };
const MARK = { SUCCESS: "✓", FAILURE: "✗", UNKNOWN: "?" };

export const RATIONALE_NOTE = "Each reason quotes the transcript with its turn (line). A quote the server did not find in "
  + "the transcript is marked: that reason may not be grounded.";

const number = (n) => (Number.isInteger(n) ? String(n) : n.toFixed(1));
const likert = (n) => (LIKERT[n - 1] || "UNKNOWN").toLowerCase().replace("_", " ");

/** "1 of 2 criteria met", "7 on 1–10", "agree (4 of 5)": the score on its scale; null when the model could not tell. */
export function scoreText(e) {
  if (e.type === "PASS_FAIL") return e.verdict ? PASS[e.verdict] : null;
  if (e.score === null || e.score === undefined) return null;
  if (e.type === "CHECKLIST") return `${number(e.score)} of ${e.criteria.length} criteria met`;
  if (e.type === "PERCENTAGE") return `${number(e.score)}%`;
  if (e.type === "LIKERT") return `${likert(e.score)} (${number(e.score)} of 5)`;
  return `${number(e.score)} on ${e.scaleMin}–${e.scaleMax}`;
}

/** What the score is held to: "needs 2", "needs ≥ 4 (agree)". */
function thresholdText(e) {
  if (e.type === "PASS_FAIL" || e.threshold === null || e.threshold === undefined) return "a pass is a success";
  if (e.type === "CHECKLIST") return `needs ${number(e.threshold)} of ${e.criteria.length}`;
  if (e.type === "PERCENTAGE") return `needs ≥ ${number(e.threshold)}%`;
  if (e.type === "LIKERT") return `needs ≥ ${number(e.threshold)} (${likert(e.threshold)})`;
  return `needs ≥ ${number(e.threshold)}`;
}

/** One line: the score against its threshold, for a table cell. */
export function evaluationLine(e) {
  if (!e) return "no rubric";
  return `${scoreText(e) ?? "the transcript did not tell"} · ${thresholdText(e)}`;
}

/** Why an output came out as it did: the reason, the quote and its turn, and a warning when it is not grounded. */
export function rationaleView(r) {
  if (!r) return null;
  const grounded = r.quote && r.quoteFound;
  return h("div", { class: `why${grounded ? "" : " ungrounded"}`, testid: "rationale", dataset: { output: r.output } },
    h("span", { class: "reason" }, r.reason),
    r.quote ? [" ", h("q", { class: "quote", testid: "rationale-quote" }, r.quote)] : null,
    r.quote && r.turn ? h("span", { class: "turn", testid: "rationale-turn" }, ` turn ${r.turn}`) : null,
    r.quote && !r.quoteFound ? h("span", { class: "badge warn", testid: "quote-not-found",
      title: "The quote is not in the transcript: this reason may not be grounded." }, "quote not in transcript") : null,
    r.quote ? null : h("span", { class: "badge warn", testid: "no-quote", title: "No words of the transcript back this reason." },
      "no quote"));
}

/** A rubric's answer: the score against the threshold, and each checklist criterion with its verdict and reason. */
export function evaluationView(e, why) {
  if (!e) return h("span", { class: "muted" }, "no rubric (yes / no prompt)");
  const typeName = { PASS_FAIL: "Pass / fail", NUMERIC: "Numeric", PERCENTAGE: "Percentage", LIKERT: "Likert", CHECKLIST: "Checklist" }[e.type];
  return h("div", { class: "evaluation", testid: "evaluation" },
    h("div", { testid: "evaluation-score" }, h("strong", {}, `${typeName}: `), evaluationLine(e)),
    e.criteria.length ? h("ul", { class: "criteria" }, e.criteria.map((c) => h("li", {
      class: `verdict verdict-${c.verdict}`, testid: "criterion-verdict", dataset: { criterion: c.name, verdict: c.verdict },
    }, h("span", { class: "mark", "aria-hidden": "true" }, MARK[c.verdict]), ` ${c.name}: ${CRITERION[c.verdict]}`,
    rationaleView(why.get(`criterion.${c.name}`))))) : null);
}

function byOutput(result) {
  return new Map((result?.rationale || []).map((r) => [r.output, r]));
}

/** A value of one result in a comparison: the value, whether it was carried over, and the reason given for it. */
function valueCell(result, row, side, why) {
  if (!result) return h("td", {}, "—");
  const carried = (result.outputSources || []).some((source) => source.output === row.key && source.carriedOver);
  if (row.key === "evaluation") return h("td", {}, evaluationView(row[side], why));
  return h("td", {}, show(row[side]),
    carried ? h("span", { class: "badge carried", title: "Not asked again: taken from the result this one replaces." }, "carried over") : null,
    rationaleView(why.get(row.key)));
}

/** A side-by-side table of two results with the fields that differ highlighted and each value's rationale. */
export function comparison(before, after, { voice, fieldNames, beforeLabel, afterLabel, testid }) {
  const rows = resultRows(before, after, { voice, fieldNames });
  const whyBefore = byOutput(before);
  const whyAfter = byOutput(after);
  return h("table", { class: "compare", testid },
    h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, beforeLabel), h("th", {}, afterLabel))),
    h("tbody", {}, rows.map((row) => h("tr", { class: row.changed ? "changed" : null, dataset: { field: row.key } },
      h("th", { scope: "row" }, row.label, row.changed ? h("span", { class: "badge diff" }, "changed") : null),
      valueCell(before, row, "before", whyBefore),
      valueCell(after, row, "after", whyAfter)))));
}
