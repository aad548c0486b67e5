// The "Conversations" tab: the agent's calls or chats, ticked for a rerun, and a preview of the draft on one.

import { h, fill, instant, money, show } from "./dom.js";
import { flipped } from "./compare.js";
import { comparison, RATIONALE_NOTE } from "./results.js";
import * as Q from "./queries.js";

// The server analyzes only finished conversations: these can be neither previewed nor rerun yet.
const IN_PROGRESS = new Set(["REGISTERED", "ONGOING"]);

export class Conversations {
  constructor(studio) {
    this.studio = studio;
    this.el = h("div", { class: "conversations" });
  }

  get voice() {
    return this.studio.agent.channel === "VOICE";
  }

  load() {
    this.rows = [];
    this.cursor = null;
    this.body = h("tbody");
    this.more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => this.page() }, "Load more");
    this.tickNote = h("span", { testid: "ticked-count" });
    this.previewBox = h("section", { class: "preview", testid: "preview", hidden: true });
    fill(this.el,
      h("p", { class: "muted" }, `Tick finished ${this.voice ? "calls" : "chats"} to rerun exactly those (the Rerun tab), `,
        "or preview the saved draft on one. A preview is charged like a rerun and never replaces the current analysis."),
      h("div", { class: "toolbar" }, this.tickNote,
        h("button", { type: "button", class: "secondary", onclick: () => this.tickAll() }, "Tick all shown"),
        h("button", { type: "button", class: "secondary", onclick: () => this.clearTicks() }, "Clear ticks"),
        h("button", { type: "button", onclick: () => this.studio.showTab("rerun", { mode: "ticked" }) }, "Rerun the ticked ones…")),
      this.previewBox,
      h("div", { class: "table-wrap" },
        h("table", { class: "list" },
          h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, this.voice ? "Call" : "Chat"), h("th", {}, "Started"),
            h("th", {}, "Version"), h("th", {}, "Status"), h("th", {}, "Successful"), h("th", {}, "Sentiment"),
            h("th", {}, "Summary"), h("th", {}, ""))),
          this.body)),
      this.more);
    this.updateTicks();
    return this.page();
  }

  async page() {
    const document = this.voice ? Q.CALLS : Q.CHATS;
    const data = await this.studio.run(this.studio.api.request(document, { id: this.studio.agent.id, after: this.cursor }));
    if (!data) return;
    const connection = this.voice ? data.agent.calls : data.agent.chats;
    for (const node of connection.nodes) {
      this.rows.push(node);
      this.body.append(this.row(node));
    }
    this.cursor = connection.pageInfo.endCursor;
    this.more.hidden = !connection.pageInfo.hasNextPage;
    if (!this.rows.length) this.body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No conversations yet.")));
  }

  row(node) {
    const ticked = this.studio.ticked;
    const busy = IN_PROGRESS.has(node.status);
    const box = h("input", {
      type: "checkbox", testid: "conversation-tick", checked: ticked.has(node.id), "aria-label": `Tick ${node.id}`,
      disabled: busy, title: busy ? "Still in progress: only finished conversations are analyzed." : null,
      onchange: () => {
        if (box.checked) ticked.set(node.id, node);
        else ticked.delete(node.id);
        this.updateTicks();
      },
    });
    const analysis = node.analysis;
    return h("tr", { testid: "conversation-row", dataset: { id: node.id } },
      h("td", {}, box),
      h("td", { class: "mono" }, node.id),
      h("td", { class: "nowrap" }, instant(node.startedAt)),
      h("td", {}, `v${node.agentVersion.version}`),
      h("td", {}, node.status),
      h("td", {}, analysis ? show(analysis.successful) : "—"),
      h("td", {}, analysis ? analysis.userSentiment : "—"),
      h("td", { class: "summary" }, h("div", { class: "clamp", title: analysis?.summary || null },
        analysis?.summary || h("span", { class: "muted" }, "not analyzed"))),
      h("td", {}, busy ? null : h("button", {
        type: "button", class: "secondary small", testid: "preview-button", onclick: () => this.preview(node),
      }, "Preview")));
  }

  tickAll() {
    for (const node of this.rows) if (!IN_PROGRESS.has(node.status)) this.studio.ticked.set(node.id, node);
    this.body.querySelectorAll("input[type=checkbox]:not(:disabled)").forEach((box) => (box.checked = true));
    this.updateTicks();
  }

  clearTicks() {
    this.studio.ticked.clear();
    this.body.querySelectorAll("input[type=checkbox]").forEach((box) => (box.checked = false));
    this.updateTicks();
  }

  updateTicks() {
    const n = this.studio.ticked.size;
    this.tickNote.textContent = n ? `${n} ticked` : "None ticked";
  }

  async preview(node) {
    const draft = this.studio.agent.draft;
    this.previewBox.hidden = false;
    fill(this.previewBox, h("h3", {}, `Preview on ${node.id}`),
      h("p", { class: "muted", role: "status" }, `Running draft v${draft.version} (revision ${draft.revision})…`));
    this.previewBox.scrollIntoView({ block: "nearest" });
    let result;
    try {
      result = (await this.studio.api.request(Q.PREVIEW, { id: node.id })).previewAnalysis;
    } catch (error) {
      fill(this.previewBox, h("h3", {}, `Preview on ${node.id}`), h("p", { class: "problem", role: "alert" }, error.message));
      return;
    }
    const current = node.analysis;
    const fieldNames = draft.analysisConfig.dataFields.map((field) => field.name);
    const changed = (rows) => rows.querySelectorAll("tr.changed").length;
    const table = comparison(current, result, {
      voice: this.voice, fieldNames, testid: "preview-compare",
      beforeLabel: current ? `Current (${current.trigger.toLowerCase()}, v${current.agentVersion.version}, ${current.model})` : "Current: none",
      afterLabel: `Preview (draft v${result.agentVersion.version}, ${result.model})`,
    });
    fill(this.previewBox,
      h("h3", {}, `Preview on ${node.id}`),
      this.studio.configEditor.dirty ? h("p", { class: "warning" }, "You have unsaved edits: the preview used the saved draft.") : null,
      h("p", {}, current ? `${changed(table)} field(s) would change.` : "This conversation has no current analysis yet.",
        flipped(current, result) ? [" ", h("span", { class: "badge flip" }, "outcome flips"),
          ` Successful would go from ${show(current.successful)} to ${show(result.successful)}.`] : null),
      table,
      result.rationale.length || current?.rationale?.length ? h("p", { class: "hint" }, RATIONALE_NOTE) : null,
      h("p", { class: "muted" }, "Charged ", money(result.costUsd), ` (${result.inputTokens} + ${result.outputTokens} tokens): `,
        "every preview and rerun is charged, for every model. Kept in the history as PREVIEW; the current analysis is unchanged."));
  }
}
