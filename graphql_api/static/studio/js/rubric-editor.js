// The config tab's "Success judged by": the yes/no prompt or a rubric (type, scale, threshold, checklist criteria).

import { h, fill } from "./dom.js";
import { LIKERT, LIKERT_DEFAULT, RUBRIC_TYPES, criterionDiff, rubricForm, rubricInput, same } from "./compare.js";

const ARG = "input.successRubric";
const likert = (n) => LIKERT[n - 1].toLowerCase().replace("_", " ");

/** The rubric a config judges by, in a sentence (a published version's, or the draft's as edited). */
export function rubricText(rubric) {
  if (!rubric) return "Yes / no: the successful prompt.";
  const t = rubric.threshold;
  switch (rubric.type) {
    case "PASS_FAIL":
      return "Pass / fail: a SUCCESS verdict is a success.";
    case "NUMERIC":
      return `Numeric scale ${rubric.scaleMin ?? "?"}–${rubric.scaleMax ?? "?"}: success at ${t ?? "?"} or more.`;
    case "PERCENTAGE":
      return `Percentage: success at ${t ?? "?"}% or more.`;
    case "LIKERT":
      return t === null ? `Likert: success at ${LIKERT_DEFAULT} (agree) or more, the default.`
        : `Likert: success at ${t} (${likert(t)}) or more.`;
    default:
      return t === null ? `Checklist of ${rubric.criteria.length}: success when all criteria are met, the default.`
        : `Checklist of ${rubric.criteria.length}: success when ${t} criteria are met.`;
  }
}

export class RubricEditor {
  constructor(editor) {
    this.editor = editor;
  }

  get form() {
    return this.editor.form.rubric;
  }

  /** The pair of the config tab: the draft's rubric, editable, next to the published version's. */
  pair() {
    // Each type keeps its own threshold while the person tries others.
    this.thresholds = { [this.form.type]: this.form.threshold };
    this.settings = h("div", { class: "rubric-settings", dataset: { arg: ARG } });
    this.publishedBox = h("div", { testid: "published-rubric" });
    const select = h("select", {
      testid: "rubric-type", dataset: { arg: `${ARG}.type` }, onchange: () => this.setType(select.value),
    }, RUBRIC_TYPES.map(([value, label]) => h("option", { value, selected: value === this.form.type ? true : null }, label)));
    const pair = h("div", { class: "pair", dataset: { pair: "successRubric" } },
      h("div", { class: "cell field" },
        h("label", { class: "label" }, "Success judged by ", this.editor.badges(), select),
        h("div", { class: "hint" }, "A rubric answers on a scale instead of yes / no, and successful = score ≥ threshold. ",
          "The successful prompt above still says what is judged. A required data field left empty still makes a conversation unsuccessful."),
        this.settings),
      h("div", { class: "cell published" }, h("div", { class: "label" }, "Success judged by"), this.publishedBox));
    this.renderSettings();
    return pair;
  }

  setType(type) {
    this.thresholds[this.form.type] = this.form.threshold;
    this.form.type = type;
    this.form.threshold = this.thresholds[type] ?? "";
    if (type === "NUMERIC" && !this.form.scaleMin && !this.form.scaleMax) Object.assign(this.form, { scaleMin: "1", scaleMax: "10" });
    if (type === "CHECKLIST" && !this.form.criteria.length) this.form.criteria.push({ name: "", prompt: "" });
    this.renderSettings();
    this.editor.refresh();
  }

  /** An input or select bound to one property of the rubric (or of a criterion), named by its input path. */
  bind(el, target, prop, arg) {
    el.dataset.arg = arg;
    el.addEventListener(el.tagName === "SELECT" ? "change" : "input", () => {
      target[prop] = el.value;
      this.editor.refresh();
    });
    return el;
  }

  threshold(label, hint, attrs) {
    this.thresholdInput = this.bind(h("input", { type: "number", testid: "rubric-threshold", value: this.form.threshold, ...attrs }),
      this.form, "threshold", `${ARG}.threshold`);
    return h("label", { class: "field" }, label, this.thresholdInput, h("span", { class: "hint" }, hint));
  }

  renderSettings() {
    const form = this.form;
    this.thresholdInput = null;
    this.criteriaBox = null;
    const scale = (prop, label) => h("label", { class: "field" }, label,
      this.bind(h("input", { type: "number", step: 1, testid: `rubric-${prop}`, value: form[prop] }), form, prop, `${ARG}.${prop}`));
    switch (form.type) {
      case "":
        return fill(this.settings);
      case "PASS_FAIL":
        return fill(this.settings, h("p", { class: "hint" },
          "No threshold: the model answers SUCCESS, FAILURE, or UNKNOWN when the transcript does not tell (successful left empty)."));
      case "NUMERIC":
        return fill(this.settings, h("div", { class: "row" }, scale("scaleMin", "Scale from"), scale("scaleMax", "to"),
          this.threshold("Threshold", "The lowest successful score, within the scale (required).", { step: "any" })));
      case "PERCENTAGE":
        return fill(this.settings, h("div", { class: "row" },
          this.threshold("Threshold (%)", "The lowest successful percentage, 0 to 100 (required).", { min: 0, max: 100, step: "any" })));
      case "LIKERT": {
        this.thresholdInput = this.bind(h("select", { testid: "rubric-threshold" },
          h("option", { value: "" }, `Default: ${LIKERT_DEFAULT} = agree`),
          LIKERT.map((_, i) => h("option", { value: String(i + 1), selected: form.threshold === String(i + 1) ? true : null },
            `${i + 1} = ${likert(i + 1)}`))), form, "threshold", `${ARG}.threshold`);
        return fill(this.settings, h("label", { class: "field" }, "Threshold", this.thresholdInput,
          h("span", { class: "hint" }, "The model says how much it agrees with the successful prompt read as a statement, 1 to 5. "
            + "Default 4: agree or strongly agree is a success.")));
      }
      default:
        this.criteriaBox = h("div", { class: "criteria-box", dataset: { arg: `${ARG}.criteria` } });
        fill(this.settings,
          h("div", { class: "row" }, this.threshold("Threshold (criteria met)",
            "How many criteria must be met. Empty: all of them (the default).", { min: 1, step: 1 })),
          this.criteriaBox,
          h("button", { type: "button", class: "secondary small", testid: "add-criterion", onclick: () => this.addCriterion() },
            "Add a criterion"));
        return this.renderCriteria();
    }
  }

  renderCriteria() {
    fill(this.criteriaBox, this.form.criteria.map((criterion, i) => {
      const arg = `${ARG}.criteria[${i}]`;
      return h("div", { class: "field-card criterion", testid: "criterion", dataset: { arg } },
        h("div", { class: "row" },
          h("label", { class: "field grow" }, "Name (letters, digits and _)",
            this.bind(h("input", { type: "text", testid: "criterion-name", value: criterion.name, autocomplete: "off" }),
              criterion, "name", `${arg}.name`)),
          h("span", { class: "badge diff", hidden: true }),
          h("button", {
            type: "button", class: "link danger", testid: "remove-criterion", onclick: () => {
              this.form.criteria.splice(i, 1);
              this.renderCriteria();
              this.editor.refresh();
            },
          }, "Remove")),
        h("label", { class: "field" }, "What it checks",
          this.bind(h("textarea", { rows: 2, testid: "criterion-prompt", value: criterion.prompt }), criterion, "prompt", `${arg}.prompt`)));
    }));
  }

  addCriterion() {
    this.form.criteria.push({ name: "", prompt: "" });
    this.renderCriteria();
    this.editor.refresh();
    this.criteriaBox.querySelector(".criterion:last-child input")?.focus();
  }

  /** A refusal the server could not name a field for (GraphQL's own type check): whole-number scale bounds. */
  problem() {
    if (this.form.type !== "NUMERIC") return null;
    for (const prop of ["scaleMin", "scaleMax"]) {
      const text = this.form[prop].trim();
      if (text !== "" && !Number.isInteger(Number(text))) {
        return { argument: `${ARG}.${prop}`, message: `\`${ARG}.${prop}\` must be a whole number.` };
      }
    }
    return null;
  }

  /** Mark what differs from the published version's rubric and what is not saved yet. */
  refresh(published, saved) {
    const draft = rubricInput(this.form);
    const before = published ? rubricInput(rubricForm(published.successRubric)) : null;
    this.editor.markPair("successRubric", !published || !same(draft, before), !same(draft, rubricInput(saved.rubric)));
    if (this.thresholdInput && this.form.type === "CHECKLIST") this.thresholdInput.placeholder = `all (${this.form.criteria.length})`;

    const criteria = draft?.criteria || [];
    const old = before?.type === "CHECKLIST" ? before.criteria : [];
    const diff = criterionDiff(criteria, old);
    this.criteriaBox?.querySelectorAll(".criterion").forEach((card, i) => {
      const state = diff.get(criteria[i].name) || { state: "added" };
      const badge = card.querySelector(".badge.diff");
      badge.hidden = state.state === "same";
      badge.textContent = state.state === "changed" ? "prompt changed" : "new in draft";
      card.classList.toggle("differs", state.state !== "same");
    });
    fill(this.publishedBox,
      h("p", {}, published ? rubricText(before) : "—"),
      old.map((c) => {
        const state = diff.get(c.name).state;
        const note = state === "removed" ? "removed in draft" : state === "changed" ? "draft changes the prompt" : null;
        return h("div", { class: `published-field${note ? " differs" : ""}` }, h("strong", {}, c.name),
          note ? h("span", { class: "badge diff" }, note) : null, h("div", { class: "muted" }, c.prompt));
      }));
  }
}
