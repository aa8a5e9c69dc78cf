"""Policies: who may do what, and which models (local or external) the appliance may use."""

from appliance.policy.loader import EXECUTIVES_FILE, Policy, load_policy
from appliance.policy.schema import DataKind, Endpoint, PolicyFile, Principal, Purpose, Role, normalise_url

__all__ = [
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
