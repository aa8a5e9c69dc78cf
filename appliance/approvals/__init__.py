"""Approvals: no memory serves until the principals named in ``policies/`` have signed for it.

keys     — Ed25519 approver keys (private key file, public key for the policy);
records  — the signed approval records (vault catalog), their verification, and the gate that
           promotion (:mod:`appliance.export.promotion`), rollback and serving go through;
reports  — the evaluation report and lineage an approver signs for, as typed models.
"""
