"""The application layer: every use case of the appliance, one function each, between the doors
(the CLI, the console, the HTTP API, the daemon, the demo, the benchmark) and the packages.

Each function takes a :class:`appliance.app.session.Session`, checks that the session's principal
may do it (:mod:`appliance.app.access`; a refusal is audited), does the work as that principal and
audits it — so a rule written here holds at every door.

session  who is acting: unlocking, the first administrator, sessions for API tokens
access   the use cases and the policy actions that grant them
people   slots of people and service accounts; changing one's own secret
policy   the policy set in force (pinned), pinning another, showing it
vault    status, verification, garbage collection, TLS material
corpus   ingest, documents, forgetting (with the memory's part of it)
memory   reflections, training, updates, evaluation, export, versions
serving  the approval gate: approvals, promotion, rollback, opening memory and executive
qa       questions: through the executive, or to the memory directly
audit    reading, exporting and verifying the log
tokens   API tokens of principals, and authenticating a request's token
jobs     scheduled jobs: one run (the daemon's and `memo jobs run`), pause, resume, history
tasks    what each scheduled job does
models   the model registry
"""
