// The "Analysis config" tab: the latest draft's config, editable, next to the latest published version's.

import { h, fill, instant } from "./dom.js";
import { PROMPTS, dataFieldDiff, rubricForm, rubricInput, same } from "./compare.js";
import { RubricEditor } from "./rubric-editor.js";
import * as Q from "./queries.js";

const TYPES = ["STRING", "ENUM", "BOOLEAN", "NUMBER"];
// Suggestions only: the server checks the model and names the ones it knows when it refuses one.
const MODELS = ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-2.0-flash-lite", "offline"];
const TESTIDS = { summaryPrompt: "summary-prompt", successfulPrompt: "successful-prompt", userSentimentPrompt: "sentiment-prompt" };
const REQUIRED_RULE = "A required field that the analysis leaves empty makes the conversation unsuccessful.";
const RATIONALE = [
  ["NONE", "None (the default)"],
  ["EVALUATIONS", "Evaluations: success (each criterion) and sentiment"],
  ["ALL", "All: the evaluations and every data field"],
];
const rationaleLabel = (mode) => RATIONALE.find(([value]) => value === mode)?.[1] ?? mode;

const lines = (text) => text.split("\n").map((line) => line.trim()).filter(Boolean);

function formOf(config) {
  return {
    summaryPrompt: config.summaryPrompt,
    successfulPrompt: config.successfulPrompt,
    userSentimentPrompt: config.userSentimentPrompt,
    model: config.model,
    dataFields: config.dataFields.map((field) => ({
      name: field.name, type: field.type, description: field.description, required: field.required,
      examples: field.examples.join("\n"), choices: (field.choices || []).join("\n"),
    })),
    rubric: rubricForm(config.successRubric),
    rationale: config.rationale,
    reset: {},
  };
}

function fieldInput(field) {
  return {
    name: field.name.trim(), type: field.type, description: field.description.trim(), required: field.required,
    examples: lines(field.examples), choices: field.type === "ENUM" ? lines(field.choices) : null,
  };
}

export class ConfigEditor {
  constructor(studio) {
    this.studio = studio;
    this.el = h("div", { class: "config" });
    this.rubric = new RubricEditor(this);
  }

  get draft() {
    return this.studio.agent.draft;
  }

  get published() {
    return this.studio.agent.versions.filter((v) => v.isPublished).sort((a, b) => b.version - a.version)[0] || null;
  }

  load() {
    this.form = formOf(this.draft.analysisConfig);
    this.render();
  }

  /** What a save sends: only what changed against the saved draft, with the revision the edit is based on. */
  input() {
    const saved = formOf(this.draft.analysisConfig);
    const input = { expectedRevision: this.draft.revision };
    for (const [key] of PROMPTS) {
      if (this.form.reset[key] && this.form[key].trim() === "") input[key] = null;
      else if (this.form[key] !== saved[key]) input[key] = this.form[key];
    }
    if (this.form.model.trim() !== saved.model) input.model = this.form.model.trim();
    const fields = this.form.dataFields.map(fieldInput);
    if (!same(fields, saved.dataFields.map(fieldInput))) input.dataFields = fields;
    // null goes back to the yes/no prompt; the whole rubric is sent, so it is checked as one.
    const rubric = rubricInput(this.form.rubric);
    if (!same(rubric, rubricInput(saved.rubric))) input.successRubric = rubric;
    if (this.form.rationale !== saved.rationale) input.rationale = this.form.rationale;
    return input;
  }

  get dirty() {
    return Object.keys(this.input()).length > 1;
  }

  render() {
    const draft = this.draft;
    const published = this.published;
    this.status = h("span", { class: "save-status", role: "status", testid: "save-status" });
    this.problem = h("div", { class: "problem", role: "alert", hidden: true });
    this.fieldsBox = h("div", { class: "data-fields" });
    this.publishedFields = h("div", { class: "published-fields" });
    fill(this.el,
      h("div", { class: "pair head" },
        h("div", {},
          h("h3", {}, `Latest draft · v${draft.version}`),
          h("p", { class: "muted" }, `revision ${draft.revision}, edited ${instant(draft.configUpdatedAt)}. `,
            "Reruns and previews use this config, even for conversations an older version handled.")),
        h("div", {},
          h("h3", {}, published ? `Latest published · v${published.version}` : "No published version yet"),
          h("p", { class: "muted" }, published ? `published ${instant(published.publishedAt)}; read-only.`
            : "Every setting of the draft is new."))),
      PROMPTS.map(([key, label, hint]) => [this.promptPair(key, label, hint, published),
        key === "successfulPrompt" ? this.rubric.pair() : null]),
      this.rationalePair(published),
      this.modelPair(published),
      h("div", { class: "pair" },
        h("div", { class: "cell" },
          h("div", { class: "label" }, "Data fields"),
          h("p", { class: "rule" }, REQUIRED_RULE),
          this.fieldsBox,
          h("button", { type: "button", class: "secondary", testid: "add-field", onclick: () => this.addField() }, "Add a data field")),
        h("div", { class: "cell published" }, h("div", { class: "label" }, "Data fields"), this.publishedFields)),
      this.problem,
      h("div", { class: "save-bar" },
        h("button", { type: "button", testid: "save-draft", onclick: () => this.save() }, "Save draft"),
        h("button", { type: "button", class: "secondary", onclick: () => this.load() }, "Discard edits"),
        this.status));
    this.renderFields();
    this.refresh();
  }

  promptPair(key, label, hint, published) {
    const textarea = h("textarea", {
      rows: 4, testid: TESTIDS[key], value: this.form[key], dataset: { arg: `input.${key}` },
      placeholder: "Empty: the built-in default prompt",
      oninput: () => {
        this.form[key] = textarea.value;
        this.form.reset[key] = false;
        this.refresh();
      },
    });
    const isDefault = this.draft.analysisConfig[`${key}IsDefault`];
    return h("div", { class: "pair", dataset: { pair: key } },
      h("div", { class: "cell field" },
        h("label", { class: "label" }, label, " ", this.badges(), textarea),
        h("div", { class: "hint" }, hint, isDefault ? " Now the built-in default. " : " ",
          h("button", {
            type: "button", class: "link", onclick: () => {
              textarea.value = "";
              this.form[key] = "";
              this.form.reset[key] = true;
              this.refresh();
            },
          }, "Use the built-in default"))),
      h("div", { class: "cell published" },
        h("div", { class: "label" }, label),
        published ? h("pre", { class: "text" }, published.analysisConfig[key]) : h("p", { class: "muted" }, "—")));
  }

  modelPair(published) {
    const input = h("input", {
      type: "text", list: "studio-models", testid: "model", value: this.form.model, dataset: { arg: "input.model" },
      oninput: () => {
        this.form.model = input.value;
        this.refresh();
      },
    });
    return h("div", { class: "pair", dataset: { pair: "model" } },
      h("div", { class: "cell field" },
        h("label", { class: "label" }, "Model ", this.badges(), input),
        h("datalist", { id: "studio-models" }, MODELS.map((model) => h("option", { value: model }))),
        h("div", { class: "hint" }, "Every rerun and preview is charged for this model, even one that is free at the initial run.")),
      h("div", { class: "cell published" },
        h("div", { class: "label" }, "Model"),
        h("pre", { class: "text" }, published ? published.analysisConfig.model : "—")));
  }

  /** A pair's marks: differs from the published version, and not saved yet (set by markPair). */
  badges() {
    return [h("span", { class: "badge diff", hidden: true }), " ", h("span", { class: "badge edited", hidden: true }, "unsaved")];
  }

  rationalePair(published) {
    const select = h("select", {
      testid: "rationale", dataset: { arg: "input.rationale" }, onchange: () => {
        this.form.rationale = select.value;
        this.refresh();
      },
    }, RATIONALE.map(([value, label]) => h("option", { value, selected: value === this.form.rationale ? true : null }, label)));
    return h("div", { class: "pair", dataset: { pair: "rationale" } },
      h("div", { class: "cell field" },
        h("label", { class: "label" }, "Rationale ", this.badges(), select),
        h("div", { class: "hint" }, "Each explained output comes back with a reason and a quote from the transcript with its turn; ",
          "a quote that is not really in the transcript is flagged."),
        h("p", { class: "rule", testid: "rationale-cost" }, "Reasons cost more output tokens: previews and reruns with rationale cost ",
          "more, and the rerun estimate includes them.")),
      h("div", { class: "cell published" },
        h("div", { class: "label" }, "Rationale"),
        h("pre", { class: "text" }, published ? rationaleLabel(published.analysisConfig.rationale) : "—")));
  }

  renderFields() {
    fill(this.fieldsBox, this.form.dataFields.length ? this.form.dataFields.map((field, i) => this.fieldCard(field, i))
      : h("p", { class: "muted" }, "No data fields."));
  }

  fieldCard(field, i) {
    const arg = `input.dataFields[${i}]`;
    const bind = (prop, el, read = () => el.value) => {
      el.dataset.arg = `${arg}.${prop}`;
      el.addEventListener(el.type === "checkbox" || el.tagName === "SELECT" ? "change" : "input", () => {
        field[prop] = read();
        if (prop === "type") choices.hidden = field.type !== "ENUM";
        this.refresh();
      });
      return el;
    };
    const choices = h("label", { class: "field", hidden: field.type !== "ENUM" }, "Choices (one per line)",
      bind("choices", h("textarea", { rows: 3, testid: "field-choices", value: field.choices })));
    const required = h("input", { type: "checkbox", testid: "field-required", checked: field.required });
    return h("div", { class: "field-card", testid: "data-field", dataset: { arg } },
      h("div", { class: "row" },
        h("label", { class: "field grow" }, "Name",
          bind("name", h("input", { type: "text", testid: "field-name", value: field.name, autocomplete: "off" }))),
        h("label", { class: "field" }, "Type",
          bind("type", h("select", { testid: "field-type" },
            TYPES.map((type) => h("option", { value: type, selected: type === field.type ? true : null }, type))))),
        h("label", { class: "check", title: REQUIRED_RULE }, bind("required", required, () => required.checked), " Required"),
        h("span", { class: "badge diff", hidden: true }),
        h("button", {
          type: "button", class: "link danger", onclick: () => {
            this.form.dataFields.splice(i, 1);
            this.renderFields();
            this.refresh();
          },
        }, "Remove")),
      h("div", { class: "row" },
        h("label", { class: "field grow" }, "Description",
          bind("description", h("textarea", { rows: 2, testid: "field-description", value: field.description }))),
        h("label", { class: "field grow" }, "Examples (one per line)",
          bind("examples", h("textarea", { rows: 2, testid: "field-examples", value: field.examples })))),
      choices);
  }

  addField() {
    this.form.dataFields.push({ name: "", type: "STRING", description: "", examples: "", choices: "", required: false });
    this.renderFields();
    this.refresh();
    this.fieldsBox.querySelector(".field-card:last-child input")?.focus();
  }

  /** Mark what differs from the published version and what is not saved yet. */
  refresh() {
    const published = this.published?.analysisConfig;
    const saved = formOf(this.draft.analysisConfig);
    for (const [key] of PROMPTS) {
      const value = this.form.reset[key] && this.form[key] === "" ? null : this.form[key];
      this.markPair(key, !published || (value !== null && value !== published[key]), this.form[key] !== saved[key] || Boolean(this.form.reset[key]));
    }
    this.markPair("model", !published || this.form.model.trim() !== published.model, this.form.model.trim() !== saved.model);
    this.markPair("rationale", !published || this.form.rationale !== published.rationale, this.form.rationale !== saved.rationale);
    this.rubric.refresh(published, saved);

    const fields = this.form.dataFields.map(fieldInput);
    const diff = dataFieldDiff(fields, published?.dataFields || []);
    this.fieldsBox.querySelectorAll(".field-card").forEach((card, i) => {
      const state = diff.get(fields[i].name) || { state: "added", props: [] };
      const badge = card.querySelector(".badge.diff");
      badge.hidden = state.state === "same";
      badge.textContent = state.state === "changed" ? `changed: ${state.props.join(", ")}` : state.state === "added" ? "new in draft" : "";
      card.classList.toggle("differs", state.state !== "same");
    });
    fill(this.publishedFields, (published?.dataFields || []).map((field) => {
      const state = diff.get(field.name);
      const note = state.state === "removed" ? "removed in draft" : state.state === "changed" ? `draft changes ${state.props.join(", ")}` : null;
      return h("div", { class: `published-field${note ? " differs" : ""}` },
        h("strong", {}, field.name), ` ${field.type}${field.required ? ", required" : ""}`,
        note ? h("span", { class: "badge diff" }, note) : null,
        field.description ? h("div", { class: "muted" }, field.description) : null,
        field.choices ? h("div", { class: "muted" }, `choices: ${field.choices.join(", ")}`) : null,
        field.examples.length ? h("div", { class: "muted" }, `examples: ${field.examples.join(", ")}`) : null);
    }), published && !published.dataFields.length ? h("p", { class: "muted" }, "No data fields.") : null);

    this.status.textContent = this.dirty ? "Unsaved edits." : this.savedNote || "No unsaved edits.";
    this.studio.draftDirty(this.dirty);
  }

  markPair(key, differs, edited) {
    const pair = this.el.querySelector(`[data-pair="${key}"]`);
    pair.classList.toggle("differs", differs);
    const badge = pair.querySelector(".badge.diff");
    badge.hidden = !differs;
    badge.textContent = this.published ? `differs from v${this.published.version}` : "new";
    pair.querySelector(".badge.edited").hidden = !edited;
  }

  clearErrors() {
    this.el.querySelectorAll(".error").forEach((el) => el.remove());
    this.el.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    this.problem.hidden = true;
  }

  /** Show a refused input at the field it concerns (`extensions.argument`), or its nearest enclosing one. */
  showError(argument, message) {
    let target = null;
    for (let path = argument; !target;) {
      target = this.el.querySelector(`[data-arg="${CSS.escape(path)}"]`);
      const parent = path.replace(/(\.[^.[\]]+|\[\d+\])$/, "");
      if (parent === path) break;
      path = parent;
    }
    if (!target) {
      fill(this.problem, h("strong", {}, "Not saved. "), message);
      this.problem.hidden = false;
      return;
    }
    target.classList.add("invalid");
    target.setAttribute("aria-invalid", "true");
    const box = target.matches("input, textarea, select") ? target.closest("label, .field") || target.parentElement : target;
    box.append(h("p", { class: "error", role: "alert", testid: "field-error" }, message));
    target.scrollIntoView({ block: "center" });
    if (target.focus) target.focus();
  }

  async save({ overwrite = false } = {}) {
    this.clearErrors();
    if (overwrite) {
      // Base the edit on the draft as it is now, keeping the form: the person chose to replace the other edit.
      const { agent } = await this.studio.api.request(Q.AGENT, { id: this.studio.agent.id });
      this.studio.agent.draft = agent.draft;
      this.studio.agent.versions = agent.versions;
    }
    const input = this.input();
    if (Object.keys(input).length === 1) {
      this.status.textContent = "Nothing to save: the form matches the saved draft.";
      return;
    }
    const problem = "successRubric" in input ? this.rubric.problem() : null;
    if (problem) {
      this.status.textContent = "Not saved.";
      return this.showError(problem.argument, problem.message);
    }
    this.status.textContent = "Saving…";
    try {
      const data = await this.studio.api.request(Q.SAVE_DRAFT, { agentId: this.studio.agent.id, input });
      const version = data.updateDraftPrompts;
      this.savedNote = `Saved: draft v${version.version} is now at revision ${version.revision}.`;
      this.studio.draftSaved(version);
    } catch (error) {
      this.status.textContent = "Not saved.";
      if (error.code === "BAD_USER_INPUT" && error.argument) this.showError(error.argument, error.message);
      else if (error.code === "CONFLICT") this.showConflict(error, input.expectedRevision);
      else {
        fill(this.problem, h("strong", {}, "Not saved. "), error.message);
        this.problem.hidden = false;
      }
    }
  }

  showConflict(error, mine) {
    const now = error.extensions;
    const published = now.version !== undefined && now.version !== this.draft.version;
    fill(this.problem,
      h("div", { testid: "conflict" },
        h("strong", {}, "Not saved: someone else changed this draft since you opened it. "),
        `You edited revision ${mine} of draft v${this.draft.version}; `,
        published ? `the draft was published and the new draft is v${now.version}, revision ${now.revision}. `
          : `it is now at revision ${now.revision ?? "?"}. `,
        "Your edits are still in the form. Look at the current draft first, or save yours over it on purpose.",
        h("div", { class: "actions" },
          h("button", { type: "button", class: "secondary", onclick: () => this.studio.reloadAgent() }, "Show the current draft (drop my edits)"),
          h("button", { type: "button", onclick: () => this.save({ overwrite: true }) }, "Save my edits over it"))));
    this.problem.hidden = false;
    this.problem.scrollIntoView({ block: "center" });
  }
}
