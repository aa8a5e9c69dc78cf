"""Policies: who may do what, and which models (local or external) the appliance may use."""

from appliance.policy.loader import APPROVERS_FILE, EXECUTIVES_FILE, Policy, load_policy
from appliance.policy.schema import ApprovalRules, DataKind, Endpoint, PolicyFile, Principal, Purpose, Role, normalise_url

__all__ = [
    "APPROVERS_FILE",
    "ApprovalRules",
    "EXECUTIVES_FILE",
    "DataKind",
    "Endpoint",
    "Policy",
    "PolicyFile",
    "Principal",
    "Purpose",
    "Role",
    "load_policy",
    "normalise_url",
]
