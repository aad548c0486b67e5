// Every GraphQL document the studio sends (see schema.graphql for the fields).

const CONFIG = `summaryPrompt successfulPrompt userSentimentPrompt
  summaryPromptIsDefault successfulPromptIsDefault userSentimentPromptIsDefault
  model dataFields { name type description examples choices required }
  successRubric { type threshold scaleMin scaleMax criteria { name prompt } } rationale`;

const VERSION = `fragment Version on AgentVersion {
  id version isPublished isLatestDraft revision title publishedAt configUpdatedAt analysisConfig { ${CONFIG} }
}`;

// A result, with what is shown beside another: the rubric's answer, the reasons, which outputs were carried over.
const RESULT = `fragment Result on AnalysisResult {
  id trigger model summary successful userSentiment inVoicemail customData
  inputTokens outputTokens costUsd charged createdAt agentVersion { version }
  evaluation { type score threshold scaleMin scaleMax verdict level criteria { name verdict } }
  rationale { output reason quote turn quoteFound }
  outputSources { output carriedOver }
}`;

const BATCH = "name state items recorded error submittedAt finishedAt";

const JOB = `fragment Job on RerunJob {
  id status total succeeded failed canceled skipped pending estimatedCostUsd costUsd configVersion mode
  createdAt startedAt finishedAt cancelRequestedAt requestedBy
  config { model successRubric { type } rationale }
  batches { ${BATCH} }
}`;

const ITEM = `fragment Item on RerunItem {
  conversationId status error outputs finishedAt result { ...Result } previousResult { ...Result }
}`;

export const AGENTS = `query StudioAgents { agents(first: 100) { nodes { id name channel draft { version revision } } } }`;

export const AGENT = `query StudioAgent($id: ID!) {
  agent(id: $id) { id name channel draft { ...Version } versions { ...Version } }
} ${VERSION}`;

export const SAVE_DRAFT = `mutation StudioSaveDraft($agentId: ID!, $input: AnalysisConfigInput!) {
  updateDraftPrompts(agentId: $agentId, input: $input) { ...Version }
} ${VERSION}`;

const CONVERSATION = `id startedAt agentVersion { version } analysis { ...Result }`;

export const CALLS = `query StudioCalls($id: ID!, $after: String) {
  agent(id: $id) { calls(first: 25, after: $after) {
    nodes { ${CONVERSATION} status: callStatus } pageInfo { hasNextPage endCursor }
  } }
} ${RESULT}`;

export const CHATS = `query StudioChats($id: ID!, $after: String) {
  agent(id: $id) { chats(first: 25, after: $after) {
    nodes { ${CONVERSATION} status: chatStatus } pageInfo { hasNextPage endCursor }
  } }
} ${RESULT}`;

export const PREVIEW = `mutation StudioPreview($id: ID!) { previewAnalysis(conversationId: $id) { ...Result } } ${RESULT}`;

export const RERUN = `mutation StudioRerun($input: RerunAnalysisInput!) {
  rerunAnalysis(input: $input) {
    reused estimate { conversations skipped inputTokens outputTokens costUsd model configVersion mode } job { ...Job }
  }
} ${JOB}`;

export const JOBS = `query StudioJobs($agentId: ID!) {
  rerunJobs(first: 50, agentId: $agentId) {
    nodes { id status total succeeded failed canceled skipped costUsd configVersion mode createdAt }
  }
}`;

// A BATCH job's batches change state without an item finishing: read on their own while it runs.
export const JOB_BATCHES = `query StudioJobBatches($id: ID!) { rerunJob(id: $id) { id batches { ${BATCH} } } }`;

export const JOB_ITEMS = `query StudioJob($id: ID!, $status: [RerunItemStatus!], $after: String) {
  rerunJob(id: $id) {
    ...Job
    items(first: 100, after: $after, status: $status) { nodes { ...Item } pageInfo { hasNextPage endCursor } }
  }
} ${JOB} ${ITEM} ${RESULT}`;

export const PROGRESS = `subscription StudioProgress($id: ID!) {
  rerunProgress(jobId: $id) { job { ...Job } item { ...Item } }
} ${JOB} ${ITEM} ${RESULT}`;

export const CANCEL = `mutation StudioCancel($id: ID!) { cancelRerun(jobId: $id) { ...Job } } ${JOB}`;
