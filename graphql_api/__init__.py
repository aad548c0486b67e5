"""GraphQL API server for reading agents and conversations and rerunning their post-call/chat analysis."""
