// The studio: the API key, the agents list, an agent's tabs (config, conversations, rerun, past reruns), navigation.

import { Api } from "./api.js";
import { h, fill } from "./dom.js";
import { ConfigEditor } from "./config-editor.js";
import { Conversations } from "./conversations.js";
import { RerunPlanner } from "./rerun.js";
import { JobsView } from "./jobs.js";
import * as Q from "./queries.js";

const KEY_STORAGE = "analysis-studio.api-key";
const TABS = [
  ["config", "Analysis config"],
  ["conversations", "Conversations & preview"],
  ["rerun", "Rerun"],
  ["reruns", "Past reruns"],
];

const $ = (selector) => document.querySelector(selector);

class Studio {
  constructor() {
    this.api = null;
    this.agent = null;
    this.ticked = new Map();
    this.notice = $("#notice");
    this.agentList = $("#agent-list");
    this.view = $("#agent-view");
    this.keyInput = $("#api-key");
    this.configEditor = new ConfigEditor(this);
    this.conversations = new Conversations(this);
    this.planner = new RerunPlanner(this);
    this.jobs = new JobsView(this);
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.useKey(this.keyInput.value.trim());
    });
    $("#forget-key").addEventListener("click", () => this.forgetKey());
  }

  start() {
    // `make run` prints a link with the key in the fragment: take it once, then drop it from the address bar.
    const params = new URLSearchParams(location.hash.slice(1));
    const fromLink = params.get("key");
    if (fromLink) {
      localStorage.setItem(KEY_STORAGE, fromLink);
      params.delete("key");
      this.setHash(params);
    }
    const key = localStorage.getItem(KEY_STORAGE);
    if (key) {
      this.keyInput.value = key;
      this.connect(key, { agentId: params.get("agent"), tab: params.get("tab"), jobId: params.get("job") });
    } else {
      this.say("Paste an API key to start.", "info");
    }
  }

  setHash(params) {
    const hash = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (hash ? `#${hash}` : ""));
  }

  /** Remember where the person is, so a reload comes back to it (never the key). */
  remember() {
    const params = new URLSearchParams();
    if (this.agent) params.set("agent", this.agent.id);
    if (this.agent && this.tab) params.set("tab", this.tab);
    if (this.agent && this.jobs.panel) params.set("job", this.jobs.panel.jobId);
    this.setHash(params);
  }

  say(message, kind = "error") {
    fill(this.notice, message);
    this.notice.className = `notice ${kind}`;
    this.notice.hidden = !message;
  }

  /** Await a request, showing its error in the notice bar; null when it failed. */
  async run(promise) {
    try {
      return await promise;
    } catch (error) {
      this.say(error.code === "UNAUTHENTICATED" ? `The API key was refused: ${error.message}` : error.message);
      return null;
    }
  }

  useKey(key) {
    if (!key) return this.say("Paste an API key first.");
    localStorage.setItem(KEY_STORAGE, key);
    this.connect(key, {});
  }

  forgetKey() {
    localStorage.removeItem(KEY_STORAGE);
    this.keyInput.value = "";
    this.api?.close();
    this.api = null;
    this.reset();
    this.say("The key is forgotten in this browser.", "info");
  }

  /** Back to no agent open and none listed: another key may see another workspace. */
  reset() {
    this.jobs.close();
    this.agent = null;
    this.tabButtons = null;
    $("#key-status").textContent = "";
    this.agentList.replaceChildren();
    this.view.replaceChildren(...$("#welcome-template").content.cloneNode(true).childNodes);
    this.remember();
  }

  async connect(key, { agentId, tab, jobId }) {
    this.reset();
    this.api?.close();
    this.api = new Api(key);
    this.say("", "info");
    const data = await this.run(this.api.request(Q.AGENTS));
    if (!data) return;
    $("#key-status").textContent = "Key accepted.";
    const agents = data.agents.nodes;
    fill(this.agentList, agents.map((agent) => h("li", { testid: "agent-item", dataset: { id: agent.id } },
      h("button", { type: "button", onclick: () => this.openAgent(agent.id) },
        h("span", { class: "name" }, agent.name),
        h("span", { class: "muted" }, `${agent.channel.toLowerCase()} · draft v${agent.draft.version}`)))));
    if (!agents.length) this.agentList.append(h("li", { class: "muted" }, "No agents in this workspace."));
    const target = agentId && agents.some((a) => a.id === agentId) ? agentId : null;
    if (target) await this.openAgent(target, { tab, jobId });
  }

  async openAgent(id, { tab = "config", jobId = null } = {}) {
    const data = await this.run(this.api.request(Q.AGENT, { id }));
    if (!data) return;
    this.jobs.close();
    this.say("", "info");
    this.agent = data.agent;
    this.ticked.clear();
    this.agentList.querySelectorAll("li").forEach((li) => li.classList.toggle("current", li.dataset.id === id));
    this.tabButtons = new Map(TABS.map(([name, label]) => [name, h("button", {
      type: "button", role: "tab", testid: `tab-${name}`, onclick: () => this.showTab(name),
    }, label)]));
    this.panes = new Map([["config", this.configEditor.el], ["conversations", this.conversations.el],
      ["rerun", this.planner.el], ["reruns", this.jobs.el]]);
    fill(this.view,
      h("div", { class: "agent-head" },
        h("h2", { testid: "agent-name" }, this.agent.name),
        h("span", { class: "muted mono" }, `${this.agent.id} · ${this.agent.channel.toLowerCase()}`)),
      h("div", { class: "tabs", role: "tablist" }, [...this.tabButtons.values()]),
      h("div", { class: "pane" }));
    this.configEditor.load();
    this.conversations.load();
    this.showTab(jobId ? "reruns" : TABS.some(([name]) => name === tab) ? tab : "config");
    if (jobId) this.openJob(jobId);
  }

  async reloadAgent() {
    const data = await this.run(this.api.request(Q.AGENT, { id: this.agent.id }));
    if (!data) return;
    this.agent.draft = data.agent.draft;
    this.agent.versions = data.agent.versions;
    this.configEditor.savedNote = null;
    this.configEditor.load();
  }

  showTab(name, options = {}) {
    this.tab = name;
    for (const [tab, button] of this.tabButtons) button.setAttribute("aria-selected", String(tab === name));
    if (name === "rerun") this.planner.show(options);
    if (name === "reruns" && !this.jobs.panel) this.jobs.refresh();
    fill(this.view.querySelector(".pane"), this.panes.get(name));
    this.remember();
  }

  openJob(jobId) {
    this.showTab("reruns");
    this.jobs.open(jobId);
    this.remember();
  }

  jobFinished() {
    this.jobs.refresh();
  }

  /** A save replaced the draft: every tab now works with the new revision. */
  draftSaved(version) {
    this.agent.draft = version;
    this.agent.versions = this.agent.versions.map((v) => (v.version === version.version ? version : v));
    this.configEditor.load();
  }

  draftDirty(dirty) {
    this.tabButtons?.get("config")?.classList.toggle("dirty", dirty);
  }
}

const studio = new Studio();
studio.start();
// A link followed in an open tab (a new #key=, an agent or a job) changes only the fragment.
window.addEventListener("hashchange", () => studio.start());
