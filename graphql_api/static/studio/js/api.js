// The studio's GraphQL client: queries and mutations over HTTP, rerunProgress over graphql-ws (its browser build).

export class ApiError extends Error {
  constructor(message, { code = "INTERNAL", extensions = {}, status = 0 } = {}) {
    super(message);
    this.code = code;
    this.extensions = extensions;
    this.status = status;
  }

  /** The input path the error concerns (`input.dataFields[1].choices`), when the server named one. */
  get argument() {
    return this.extensions.argument || null;
  }
}

function fromGraphQLError(error) {
  const extensions = error?.extensions || {};
  return new ApiError(error?.message || "Unknown error", { code: extensions.code || "INTERNAL", extensions });
}

/** graphql-ws reports a closed socket as a CloseEvent, a protocol failure as an Error, a refused operation as errors. */
function fromSocketError(error) {
  if (Array.isArray(error)) return fromGraphQLError(error[0]);
  if (error && typeof error.code === "number") {
    if (error.code === 4403) {
      return new ApiError("The server refused the API key on the WebSocket (closed 4403).", { code: "UNAUTHENTICATED" });
    }
    const reason = error.reason ? `: ${error.reason}` : "";
    return new ApiError(`The live connection closed (${error.code}${reason}).`, { code: "NETWORK" });
  }
  return new ApiError(error?.message || "The live connection failed.", { code: "NETWORK" });
}

export class Api {
  constructor(key) {
    this.key = key;
    this.socket = null;
  }

  /** Run a query or mutation; resolves to `data`, rejects with the first error as an ApiError. */
  async request(query, variables = {}) {
    let response;
    try {
      response = await fetch("/graphql", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", Authorization: `Bearer ${this.key}` },
        body: JSON.stringify({ query, variables }),
      });
    } catch (error) {
      throw new ApiError(`The server could not be reached (${error.message}).`, { code: "NETWORK" });
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not a GraphQL response (a proxy's error page): reported by status below.
    }
    if (body?.errors?.length) {
      const error = fromGraphQLError(body.errors[0]);
      error.status = response.status;
      throw error;
    }
    if (!response.ok || !body) throw new ApiError(`The server answered HTTP ${response.status}.`, { status: response.status });
    return body.data;
  }

  /** True when graphql-ws's browser build is loaded (installed at setup); otherwise progress is polled. */
  get live() {
    return typeof globalThis.graphqlWs?.createClient === "function";
  }

  /** Subscribe over one shared socket; returns the function that ends the subscription. */
  subscribe(query, variables, { next, error, complete }) {
    if (this.socket === null) {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      this.socket = globalThis.graphqlWs.createClient({
        url: `${scheme}://${location.host}/graphql`,
        connectionParams: { Authorization: `Bearer ${this.key}` },
        lazy: true,
        retryAttempts: 3,
        shouldRetry: (event) => !(event && event.code === 4403),
      });
    }
    return this.socket.subscribe(
      { query, variables },
      {
        next: (message) => (message.errors?.length ? error(fromGraphQLError(message.errors[0])) : next(message.data)),
        error: (failure) => error(fromSocketError(failure)),
        complete,
      },
    );
  }

  close() {
    this.socket?.dispose();
    this.socket = null;
  }
}
