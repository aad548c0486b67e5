// The "Rerun" tab: what to rerun (a filter or ticked conversations), the dry-run estimate, a budget cap, start.

import { h, fill, count, money, randomId } from "./dom.js";
import * as Q from "./queries.js";

// Only finished conversations are analyzed, so registered and ongoing ones are not offered.
const STATUSES = { VOICE: ["NOT_CONNECTED", "ENDED", "ERROR"], CHAT: ["ENDED", "ERROR"] };
const SENTIMENTS = ["NEGATIVE", "NEUTRAL", "POSITIVE", "UNKNOWN"];

const checked = (root, name) => [...root.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value);

function nextDay(date) {
  const day = new Date(`${date}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + 1);
  return day.toISOString();
}

export class RerunPlanner {
  constructor(studio) {
    this.studio = studio;
    this.el = h("div", { class: "rerun" });
    this.mode = "filter";
  }

  /** Show the tab: built once per agent, so the filter survives switching tabs; what may have changed is updated. */
  show({ mode } = {}) {
    const agent = this.studio.agent;
    if (this.agent !== agent) {
      this.agent = agent;
      this.mode = "filter";
      this.load();
    }
    if (mode) this.setMode(mode);
    const draft = agent.draft;
    const ticked = this.studio.ticked.size;
    this.tickedLabel.textContent = `The ${ticked} ticked in the Conversations tab`;
    this.draftNote.textContent = `Uses the config of draft v${draft.version} (revision ${draft.revision})`;
    this.dirtyNote.hidden = !this.studio.configEditor.dirty;
    // An estimate is for one draft revision and one set of ticks: anything else needs a new one.
    if (this.estimated && this.estimated.basis !== this.basis()) this.invalidate();
  }

  basis() {
    return `${this.studio.agent.draft.revision}:${[...this.studio.ticked.keys()].join(",")}`;
  }

  setMode(mode) {
    this.mode = mode;
    this.el.querySelector(`input[name="target-mode"][value="${mode}"]`).checked = true;
    this.filterBox.disabled = mode !== "filter";
    this.invalidate();
  }

  load() {
    const agent = this.studio.agent;
    const invalidate = () => this.invalidate();
    const radio = (value, label) => h("label", { class: "check" },
      h("input", { type: "radio", name: "target-mode", value, testid: `target-${value}`, checked: this.mode === value,
        onchange: () => this.setMode(value) }), " ", label);
    const boxes = (name, values, label) => h("fieldset", { class: "inline" }, h("legend", {}, label),
      values.map(([value, text]) => h("label", { class: "check" },
        h("input", { type: "checkbox", name, value, onchange: invalidate }), " ", text)));

    this.filterBox = h("fieldset", { class: "filter", disabled: this.mode !== "filter" },
      h("legend", {}, "Filter (every condition must hold; none means all conversations)"),
      boxes("versions", agent.versions.map((v) => [String(v.version), v.isPublished ? `v${v.version}` : `v${v.version} (draft)`]),
        "Handled by version"),
      h("div", { class: "row" },
        h("label", { class: "field" }, "Started from (UTC)", h("input", { type: "date", name: "from", testid: "from-date", onchange: invalidate })),
        h("label", { class: "field" }, "to (UTC, inclusive)", h("input", { type: "date", name: "to", testid: "to-date", onchange: invalidate })),
        h("label", { class: "field" }, "Successful now",
          h("select", { name: "successful", testid: "successful-filter", onchange: invalidate },
            h("option", { value: "" }, "any"), h("option", { value: "true" }, "yes"), h("option", { value: "false" }, "no")))),
      boxes("status", STATUSES[agent.channel].map((s) => [s, s.toLowerCase().replace("_", " ")]), "Status"),
      boxes("sentiment", SENTIMENTS.map((s) => [s, s.toLowerCase()]), "Sentiment now"));

    this.cap = h("input", { type: "number", min: "0", step: "0.01", testid: "max-cost", placeholder: "no cap", oninput: invalidate });
    this.onlyChanged = h("input", { type: "checkbox", testid: "only-changed", onchange: invalidate });
    this.batch = h("input", { type: "checkbox", testid: "batch-mode", onchange: invalidate });
    this.estimateBox = h("div", { class: "estimate", testid: "estimate", hidden: true });
    this.problem = h("div", { class: "problem", role: "alert", hidden: true });
    this.start = h("button", { type: "button", testid: "start-rerun", disabled: true, onclick: () => this.startRerun() }, "Start rerun");

    this.tickedLabel = h("span");
    this.draftNote = h("strong");
    this.dirtyNote = h("p", { class: "warning", hidden: true },
      "You have unsaved edits in the config tab: save them first, or the rerun uses the saved draft.");
    fill(this.el,
      h("fieldset", {}, h("legend", {}, "What to rerun"),
        radio("filter", `${agent.channel === "VOICE" ? "Calls" : "Chats"} of ${agent.name} matching a filter`),
        radio("ticked", this.tickedLabel)),
      this.filterBox,
      h("fieldset", { class: "options" }, h("legend", {}, "How to rerun"),
        h("label", { class: "check" }, this.onlyChanged, " Only what changed"),
        h("p", { class: "hint" }, "Per conversation, ask the model only for the outputs whose prompt, field or model differ from ",
          "the config that produced its current result; the others are carried over. Conversations with nothing to recompute ",
          "are skipped, and not charged."),
        h("label", { class: "check" }, this.batch, " Batch mode (half price, results within a day)"),
        h("p", { class: "hint" }, "Sent through the Gemini Batch API at the batch price, half the interactive one. Results come ",
          "back as batches finish: minutes, at most a day. For backfills.")),
      h("div", { class: "row" },
        h("label", { class: "field" }, "Budget cap (USD)", this.cap),
        h("p", { class: "hint" }, "The rerun is refused, and nothing is created, when the estimate is above the cap.")),
      h("div", { class: "rules-inline" },
        h("p", {}, this.draftNote,
          ", even for conversations an older published version handled. It is snapshotted when you start: edits saved later don't change this rerun."),
        h("p", {}, h("strong", {}, "Every rerun is charged, for every model"), ", including models that were free for the initial analysis."),
        this.dirtyNote),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", testid: "estimate-button", onclick: () => this.estimate() }, "Estimate cost"),
        this.start),
      this.estimateBox,
      this.problem);
  }

  /** The rerun's targets and cap as RerunAnalysisInput, or an error message. */
  input() {
    const agent = this.studio.agent;
    const input = {};
    if (this.mode === "ticked") {
      const ids = [...this.studio.ticked.keys()];
      if (!ids.length) return { problem: "Nothing is ticked: tick conversations in the Conversations tab, or use a filter." };
      input[agent.channel === "VOICE" ? "callIds" : "chatIds"] = ids;
    } else {
      const root = this.filterBox;
      const filter = {};
      const versions = checked(root, "versions").map(Number);
      if (versions.length) filter.versions = versions;
      const from = root.querySelector('[name="from"]').value;
      const to = root.querySelector('[name="to"]').value;
      if (from) filter.startedAfter = `${from}T00:00:00Z`;
      if (to) filter.startedBefore = nextDay(to);
      const successful = root.querySelector('[name="successful"]').value;
      if (successful) filter.successful = successful === "true";
      const status = checked(root, "status");
      if (status.length) filter.status = status;
      const sentiment = checked(root, "sentiment");
      if (sentiment.length) filter.userSentiment = sentiment;
      input.agentId = agent.id;
      if (Object.keys(filter).length) input.filter = filter;
    }
    if (this.cap.value !== "") input.maxCostUsd = this.cap.value;
    if (this.onlyChanged.checked) input.onlyChanged = true;
    if (this.batch.checked) input.mode = "BATCH";
    return { input };
  }

  invalidate() {
    this.estimated = null;
    this.start.disabled = true;
    this.estimateBox.hidden = true;
    this.problem.hidden = true;
  }

  fail(message, extra = null) {
    fill(this.problem, message, extra);
    this.problem.hidden = false;
  }

  async estimate() {
    this.invalidate();
    const { input, problem } = this.input();
    if (problem) return this.fail(problem);
    let payload;
    try {
      payload = (await this.studio.api.request(Q.RERUN, { input: { ...input, dryRun: true } })).rerunAnalysis;
    } catch (error) {
      return this.fail(error.code === "LIMIT_EXCEEDED" && input.maxCostUsd ? `Over your budget cap: ${error.message}` : error.message);
    }
    const e = payload.estimate;
    const batch = e.mode === "BATCH";
    const rationale = this.studio.agent.draft.analysisConfig.rationale;
    fill(this.estimateBox,
      h("h3", {}, "Estimate"),
      h("dl", { class: "counters" },
        h("dt", {}, "Conversations"), h("dd", { testid: "estimate-conversations" }, count(e.conversations)),
        input.onlyChanged ? [h("dt", {}, "Skipped"), h("dd", { testid: "estimate-skipped" }, count(e.skipped),
          h("span", { class: "muted" }, " with nothing to recompute: not rerun, not charged"))] : null,
        h("dt", {}, "Tokens"), h("dd", {}, `${count(e.inputTokens)} in + ${count(e.outputTokens)} out`),
        h("dt", {}, "Cost"), h("dd", { testid: "estimate-cost" }, money(e.costUsd),
          h("span", { class: "muted" }, batch ? " at the batch price (half the interactive one)" : " at the interactive price")),
        h("dt", {}, "Mode"), h("dd", { testid: "estimate-mode" }, batch ? "batch: results as batches finish, within a day" : "interactive"),
        h("dt", {}, "Model"), h("dd", {}, e.model),
        h("dt", {}, "Config"), h("dd", {}, `draft v${e.configVersion}`)),
      h("p", { class: "muted" }, "Charged at the model's price even if it was free at the initial run.",
        rationale !== "NONE" ? ` Includes the output tokens of the rationale (${rationale.toLowerCase()}).` : null));
    this.estimateBox.hidden = false;
    if (e.conversations === 0 && e.skipped > 0) {
      return this.fail(`Nothing to rerun: all ${count(e.skipped)} conversations already have results from this config for every output. `
        + "Untick \"Only what changed\" to rerun them anyway.");
    }
    if (e.conversations === 0) return this.fail("Nothing to rerun: no finished conversation matches.");
    // One key per estimate: a double-click or a retry of this start returns the same job.
    this.estimated = { input, idempotencyKey: `studio-${randomId()}`, basis: this.basis() };
    this.start.disabled = false;
  }

  async startRerun() {
    if (!this.estimated) return;
    this.start.disabled = true;
    const { input, idempotencyKey } = this.estimated;
    let payload;
    try {
      payload = (await this.studio.api.request(Q.RERUN, { input: { ...input, idempotencyKey } })).rerunAnalysis;
    } catch (error) {
      this.start.disabled = false;
      const running = error.code === "CONFLICT" && error.extensions.jobId;
      return this.fail(error.message, running ? h("button", {
        type: "button", class: "link", onclick: () => this.studio.openJob(error.extensions.jobId),
      }, " Watch the running one") : null);
    }
    this.estimated = null;
    this.studio.openJob(payload.job.id);
  }
}
