// The "Reruns" tab: an agent's past reruns, and one rerun opened: live progress, items old against new, cancel.

import { h, fill, count, money, instant, show } from "./dom.js";
import { flipped, resultRows } from "./compare.js";
import { RATIONALE_NOTE, comparison, evaluationLine } from "./results.js";
import * as Q from "./queries.js";

const FINAL = new Set(["SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"]);
const ITEM_STATUSES = ["SUCCEEDED", "FAILED", "CANCELED", "RUNNING", "PENDING"];
const BATCH_POLL_MS = 5000;
const COLUMNS = 8;

function change(before, after, changed) {
  if (!changed) return h("span", {}, show(after ?? before));
  return h("span", { class: "change" }, h("del", {}, show(before)), " → ", h("ins", {}, show(after)));
}

/** Long text changed: the new text, with the old one above it, quieter. */
function textChange(before, after, changed) {
  if (!changed) return h("span", {}, show(after ?? before));
  return h("div", { class: "change stacked" }, h("del", {}, show(before)), h("ins", {}, show(after)));
}

/** One rerun: counters and a progress bar fed by rerunProgress (or polling without graphql-ws), its items, cancel. */
export class JobPanel {
  constructor(studio, jobId) {
    this.studio = studio;
    this.jobId = jobId;
    this.items = new Map();
    this.opened = new Set();
    this.filter = "";
    this.stop = null;
    this.el = h("section", { class: "job", testid: "job" }, h("p", { class: "muted" }, "Loading the rerun…"));
  }

  async open() {
    const job = await this.fetchItems();
    if (!job) return;
    this.render();
    if (!FINAL.has(this.job.status)) this.follow();
  }

  /** Read the job and a page of its items (all statuses, or the filter's), merging them into what is known. */
  async fetchItems({ after = null } = {}) {
    const variables = { id: this.jobId, status: this.filter ? [this.filter] : null, after };
    const data = await this.studio.run(this.studio.api.request(Q.JOB_ITEMS, variables));
    if (!data) return null;
    const { items, ...job } = data.rerunJob;
    this.job = job;
    for (const item of items.nodes) this.items.set(item.conversationId, item);
    this.cursor = items.pageInfo.hasNextPage ? items.pageInfo.endCursor : null;
    return job;
  }

  render() {
    this.status = h("span", { class: "status", testid: "rerun-status" });
    this.progress = h("progress", { testid: "rerun-progress", max: 1, value: 0 });
    this.done = h("span", { class: "muted" });
    this.counters = h("dl", { class: "counters", testid: "rerun-counters" });
    this.batches = h("div", { class: "batches", testid: "batches", hidden: true });
    this.flips = h("p", { class: "flips", testid: "flipped" });
    this.cancel = h("button", { type: "button", class: "danger", testid: "cancel-rerun", onclick: () => this.cancelJob() }, "Cancel rerun");
    this.note = h("p", { class: "muted", role: "status" });
    this.feed = h("p", { class: "muted", testid: "progress-feed" });
    this.rows = h("tbody");
    this.more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => this.loadMore() }, "Load more items");
    const select = h("select", { testid: "item-filter", onchange: () => this.setFilter(select.value) },
      h("option", { value: "" }, "all"), ITEM_STATUSES.map((s) => h("option", { value: s }, s.toLowerCase())));
    fill(this.el,
      h("div", { class: "job-head" },
        h("h3", {}, "Rerun ", h("span", { class: "mono" }, this.job.id), " ", this.status),
        this.cancel),
      h("div", { class: "progress-line" }, this.progress, this.done),
      this.counters, this.batches, this.flips, this.feed, this.note,
      h("div", { class: "toolbar" }, h("label", {}, "Show items: ", select)),
      h("div", { class: "table-wrap" },
        h("table", { class: "list items" },
          h("thead", {}, h("tr", {}, h("th", {}, "Conversation"), h("th", {}, "Status"),
            h("th", { title: "The outputs this item asked the model for; the others were carried over" }, "Recomputed"),
            h("th", {}, "Successful"), h("th", {}, "Sentiment"), h("th", {}, "Summary (before → after)"),
            h("th", {}, "Data fields that changed"), h("th", {}, ""))),
          this.rows)),
      this.more);
    this.update();
  }

  update() {
    const job = this.job;
    this.status.textContent = job.status;
    this.status.className = `status status-${job.status}`;
    const finished = job.total - job.pending;
    this.progress.max = Math.max(job.total, 1);
    this.progress.value = finished;
    this.progress.setAttribute("aria-valuenow", String(finished));
    this.progress.setAttribute("aria-valuemax", String(job.total));
    this.done.textContent = `${count(finished)} of ${count(job.total)} finished`;
    const batch = job.mode === "BATCH";
    const judged = job.config.successRubric ? `success by a ${job.config.successRubric.type.toLowerCase().replace("_", "/")} rubric`
      : "success by the yes/no prompt";
    fill(this.counters,
      h("dt", {}, "Succeeded"), h("dd", { testid: "count-succeeded" }, count(job.succeeded)),
      h("dt", {}, "Failed"), h("dd", { testid: "count-failed" }, count(job.failed)),
      h("dt", {}, "Canceled"), h("dd", { testid: "count-canceled" }, count(job.canceled)),
      h("dt", {}, "Pending"), h("dd", { testid: "count-pending" }, count(job.pending)),
      job.skipped ? [h("dt", {}, "Skipped"), h("dd", { testid: "count-skipped" }, count(job.skipped),
        h("span", { class: "muted" }, " with nothing to recompute (not rerun, not charged)"))] : null,
      h("dt", {}, "Mode"), h("dd", { testid: "job-mode" }, batch ? "batch, at the batch price (half): results as batches finish" : "interactive"),
      h("dt", {}, "Cost"), h("dd", {}, money(job.costUsd), " of ", money(job.estimatedCostUsd), " estimated"),
      h("dt", {}, "Config"), h("dd", {}, `draft v${job.configVersion} as snapshotted, ${job.config.model}, ${judged}, `
        + (job.config.rationale === "NONE" ? "no rationale" : `rationale for ${job.config.rationale.toLowerCase()}`)),
      h("dt", {}, "Started"), h("dd", {}, instant(job.startedAt || job.createdAt)));
    this.cancel.disabled = FINAL.has(job.status) || Boolean(job.cancelRequestedAt);
    this.cancel.hidden = FINAL.has(job.status);
    this.renderBatches();
    this.renderFlips();
    this.renderRows();
    this.more.hidden = !this.cursor;
  }

  /** A BATCH job's provider batches and the state the provider last gave each. */
  renderBatches() {
    this.batches.hidden = this.job.mode !== "BATCH";
    if (this.batches.hidden) return;
    const batches = this.job.batches;
    fill(this.batches, h("h4", {}, "Provider batches"), batches.length ? h("table", { class: "list" },
      h("thead", {}, h("tr", {}, ["Batch", "State", "Items", "Results recorded", "Sent", "Finished", "Error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, batches.map((b) => h("tr", { testid: "batch", dataset: { state: b.state } },
        h("td", { class: "mono" }, b.name),
        h("td", {}, h("span", { class: `status status-${b.state}`, testid: "batch-state" }, b.state)),
        h("td", {}, count(b.items)), h("td", {}, show(b.recorded)),
        h("td", {}, instant(b.submittedAt)), h("td", {}, instant(b.finishedAt)),
        h("td", {}, b.error ? h("span", { class: "error-text" }, b.error) : "—")))))
      : h("p", { class: "muted" }, "No batch sent yet: a runner takes the pending items into provider batches."));
  }

  renderFlips() {
    let toUnsuccessful = 0;
    let toSuccessful = 0;
    let finished = 0;
    for (const item of this.items.values()) {
      if (item.status !== "SUCCEEDED") continue;
      finished += 1;
      if (flipped(item.previousResult, item.result)) item.result.successful ? toSuccessful++ : toUnsuccessful++;
    }
    const partial = finished < this.job.succeeded ? ` (among the ${count(finished)} items loaded)` : "";
    fill(this.flips, h("strong", { testid: "flipped-count" }, String(toSuccessful + toUnsuccessful)),
      ` outcome(s) flipped${partial}: ${toUnsuccessful} became unsuccessful, ${toSuccessful} became successful.`,
      toUnsuccessful ? h("span", { class: "muted" }, " A required data field left empty makes a conversation unsuccessful.") : null);
  }

  renderRows() {
    const voice = this.studio.agent?.channel !== "CHAT";
    const fieldNames = this.studio.agent?.draft.analysisConfig.dataFields.map((f) => f.name) || [];
    const shown = [...this.items.values()].filter((item) => !this.filter || item.status === this.filter);
    fill(this.rows, shown.length ? shown.map((item) => {
      const rows = resultRows(item.previousResult, item.result, { voice, fieldNames });
      const byKey = Object.fromEntries(rows.map((row) => [row.key, row]));
      const cell = (key, render = change) => {
        const row = byKey[key];
        return h("td", { class: row.changed ? "changed" : null }, item.result ? render(row.before, row.after, row.changed) : show(row.before));
      };
      const fields = rows.filter((row) => row.custom && row.changed);
      const flip = flipped(item.previousResult, item.result);
      const evaluation = byKey.evaluation;
      const open = this.opened.has(item.conversationId);
      const row = h("tr", { testid: "rerun-item", class: flip ? "flipped" : null, dataset: { status: item.status, id: item.conversationId } },
        h("td", { class: "mono" }, item.conversationId),
        h("td", {}, h("span", { class: `status status-${item.status}` }, item.status)),
        h("td", { testid: "item-outputs", class: "outputs" }, item.outputs ? item.outputs.join(", ") : h("span", { class: "muted" }, "all")),
        h("td", { class: byKey.successful.changed ? "changed" : null },
          item.result ? change(byKey.successful.before, byKey.successful.after, byKey.successful.changed) : show(byKey.successful.before),
          flip ? h("span", { class: "badge flip" }, "flipped") : null,
          evaluation ? h("div", { class: "hint", testid: "item-evaluation" }, item.result
            ? textChange(evaluationLine(evaluation.before), evaluationLine(evaluation.after), evaluation.changed)
            : evaluationLine(evaluation.before)) : null),
        cell("userSentiment"),
        cell("summary", textChange),
        h("td", { class: "fields" }, item.error ? h("span", { class: "error-text" }, item.error)
          : fields.length ? fields.map((row) => h("div", {}, `${row.label}: `, change(row.before, row.after, true)))
          : item.result ? h("span", { class: "muted" }, "none") : "—"),
        h("td", {}, item.result || item.previousResult ? h("button", {
          type: "button", class: "secondary small", testid: "item-why", "aria-expanded": String(open), onclick: () => {
            if (open) this.opened.delete(item.conversationId);
            else this.opened.add(item.conversationId);
            this.renderRows();
          },
        }, open ? "Hide" : "Why?") : null));
      return open ? [row, this.detailRow(item, { voice, fieldNames })] : row;
    }) : h("tr", {}, h("td", { colspan: COLUMNS, class: "muted" }, this.filter ? `No ${this.filter.toLowerCase()} items loaded.` : "No items.")));
  }

  /** Old and new result of one item side by side, with the rubric's answers and the reasons given for each value. */
  detailRow(item, { voice, fieldNames }) {
    const before = item.previousResult;
    const after = item.result;
    return h("tr", { class: "detail", testid: "item-detail", dataset: { id: item.conversationId } },
      h("td", { colspan: COLUMNS },
        comparison(before, after, {
          voice, fieldNames, testid: "item-compare",
          beforeLabel: before ? `Before (${before.trigger.toLowerCase()}, v${before.agentVersion.version}, ${before.model})` : "Before: none",
          afterLabel: after ? `After (rerun, v${after.agentVersion.version}, ${after.model})` : "After: not yet",
        }),
        [before, after].some((r) => r?.rationale.length) ? h("p", { class: "hint" }, RATIONALE_NOTE) : null));
  }

  /** Redraw at most once a frame however fast events arrive. */
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.update();
    });
  }

  follow() {
    if (!this.studio.api.live) {
      this.feed.textContent = "Polling every second: live updates need graphql-ws, which `make setup` installs.";
      return this.poll();
    }
    this.feed.textContent = "Live: following rerunProgress over WebSocket.";
    if (this.job.mode === "BATCH") this.watchBatches();
    this.stop = this.studio.api.subscribe(Q.PROGRESS, { id: this.jobId }, {
      next: ({ rerunProgress: event }) => {
        this.job = event.job;
        if (event.item) this.items.set(event.item.conversationId, event.item);
        this.schedule();
      },
      error: (error) => {
        this.stop = null;
        this.feed.textContent = `${error.message} Polling every second instead.`;
        this.poll();
      },
      complete: () => {
        this.stop = null;
        this.finish();
      },
    });
  }

  /** Re-read a live BATCH job's batches now and then: a batch changes state before any of its items finishes. */
  watchBatches() {
    this.batchTimer = setTimeout(async () => {
      try {
        const { rerunJob } = await this.studio.api.request(Q.JOB_BATCHES, { id: this.jobId });
        if (this.closed || FINAL.has(this.job.status)) return;
        this.job = { ...this.job, batches: rerunJob.batches };
        this.schedule();
      } catch {
        // The next event or the next read brings them.
      }
      if (!this.closed && !FINAL.has(this.job.status)) this.watchBatches();
    }, BATCH_POLL_MS);
  }

  poll() {
    this.timer = setTimeout(async () => {
      const job = await this.fetchItems();
      if (!job || this.closed) return;
      this.update();
      if (FINAL.has(job.status)) this.finish();
      else this.poll();
    }, 1000);
  }

  /** The job ended: read its items once more, so items canceled or finished without an event show their state. */
  async finish() {
    if (this.closed) return;
    await this.fetchItems();
    this.note.textContent = `Finished ${instant(this.job.finishedAt)}.`;
    this.update();
    this.studio.jobFinished(this.job);
  }

  async setFilter(status) {
    this.filter = status;
    this.cursor = null;
    if (await this.fetchItems()) this.update();
  }

  async loadMore() {
    if (this.cursor && (await this.fetchItems({ after: this.cursor }))) this.update();
  }

  async cancelJob() {
    this.cancel.disabled = true;
    try {
      const { cancelRerun: job } = await this.studio.api.request(Q.CANCEL, { id: this.jobId });
      this.job = job;
      this.note.textContent = "Cancel requested: what has not started is canceled; finished items keep their results.";
      this.update();
    } catch (error) {
      this.note.textContent = error.code === "CONFLICT" ? `Already ended: ${error.message}` : error.message;
      this.cancel.disabled = false;
    }
  }

  close() {
    this.closed = true;
    if (this.stop) this.stop();
    clearTimeout(this.timer);
    clearTimeout(this.batchTimer);
    if (this.frame) cancelAnimationFrame(this.frame);
  }
}

/** The list of an agent's reruns, newest first, with the opened one above it. */
export class JobsView {
  constructor(studio) {
    this.studio = studio;
    this.panelBox = h("div");
    this.list = h("tbody");
    this.el = h("div", { class: "jobs" }, this.panelBox,
      h("div", { class: "toolbar" }, h("h3", {}, "Past reruns"),
        h("button", { type: "button", class: "secondary small", onclick: () => this.refresh() }, "Refresh")),
      h("div", { class: "table-wrap" }, h("table", { class: "list" },
        h("thead", {}, h("tr", {}, ["Requested", "Status", "Mode", "Conversations", "Skipped", "Succeeded", "Failed", "Canceled", "Cost",
          "Config", ""]
          .map((title) => h("th", {}, title)))),
        this.list)));
    this.panel = null;
  }

  async refresh() {
    const data = await this.studio.run(this.studio.api.request(Q.JOBS, { agentId: this.studio.agent.id }));
    if (!data) return;
    const jobs = data.rerunJobs.nodes;
    fill(this.list, jobs.length ? jobs.map((job) => h("tr", { testid: "rerun-job", dataset: { id: job.id, status: job.status },
      class: this.panel?.jobId === job.id ? "current" : null },
    h("td", {}, instant(job.createdAt)),
    h("td", {}, h("span", { class: `status status-${job.status}` }, job.status)),
    h("td", {}, job.mode.toLowerCase()),
    [job.total, job.skipped, job.succeeded, job.failed, job.canceled].map((n) => h("td", {}, count(n))),
    h("td", {}, money(job.costUsd)), h("td", {}, `v${job.configVersion}`),
    h("td", {}, h("button", { type: "button", class: "secondary small", testid: "open-job", onclick: () => this.studio.openJob(job.id) }, "Open"))))
      : h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No reruns of this agent yet.")));
  }

  open(jobId) {
    this.close();
    this.panel = new JobPanel(this.studio, jobId);
    fill(this.panelBox, this.panel.el);
    this.panel.open();
    this.refresh();
  }

  close() {
    this.panel?.close();
    this.panel = null;
    this.panelBox.replaceChildren();
  }
}
