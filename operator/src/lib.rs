//! mcp-guard-operator: derives each MCPServer's Host/Origin allowlist from the cluster and injects the guard.
//!
//! Pure core, thin IO shell. The data flow, in module names: [`stores`] (how the watched objects are cached) →
//! [`sources`] (one module per input kind, folded by [`sources::derive`] into an allowlist and findings, with
//! [`settings`] resolving each server's settings over its policy) → [`controller`] (writes the ConfigMap of
//! [`children`], the NetworkPolicy of [`netpol`], the status of [`status`] and Events). The [`webhook`] injects
//! the guard into pods by the [`pod_contract`] the sources read back; [`selector`] is the one label matcher of
//! both. [`auth`] builds each server's authentication (resource URIs, issuers) with the keys [`cluster_issuer`]
//! fetches. [`validate`], [`auth`] and [`access`] check specs into [`field_error`]s, which status and the
//! validating webhook report.

pub mod access;
pub mod admin;
pub mod auth;
pub mod children;
pub mod cli;
pub mod cluster_issuer;
pub mod controller;
pub mod crd;
pub mod crd_reference;
pub mod events;
pub mod field_error;
pub mod fleet;
pub mod gateway;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod netpol;
pub mod pod_contract;
pub mod policy_status;
pub mod preflight;
pub mod run;
pub mod selector;
pub mod settings;
pub mod sources;
pub mod status;
pub mod stores;
pub mod validate;
pub mod webhook;
pub mod webhook_check;
