//! Events (`events.k8s.io/v1`) that say what is true: one Event per distinct note.
//!
//! kube-runtime's `Recorder` (like client-go's) folds every Event with the same reason, action and object into
//! one series and keeps the *first* note, so an `AllowlistUpdated` Event would go on naming the first allowlist
//! while its count rose. This recorder keys its series by the note as well: an Event whose note was published for
//! the same object within [`SERIES_TTL`] raises that Event's count (the same thing happened again); any other
//! note is a new Event. The notes the controller writes describe one change each ([`allowlist_change_note`]),
//! so they stay true after later changes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as KubeEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::Mutex;

/// How long a published Event is remembered for counting repeats (kube-runtime uses the same 6 minutes).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// The API server refuses notes longer than 1 kB.
pub const MAX_NOTE: usize = 1024;
/// Remembered Events at most (older ones are forgotten first when full).
const MAX_REMEMBERED: usize = 10_000;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

/// One Event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub type_: EventType,
    /// PascalCase, e.g. `AllowlistUpdated`.
    pub reason: String,
    /// PascalCase, e.g. `UpdateAllowlist`.
    pub action: String,
    /// What happened, at most [`MAX_NOTE`] bytes (longer notes are cut).
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    type_: EventType,
    reason: String,
    action: String,
    note: String,
    uid: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

struct Published {
    name: String,
    count: i32,
    last: Instant,
}

/// Publishes Events as one reporting controller/instance.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<Series>,
}

/// The Events remembered for counting repeats, and when the expired ones were last dropped.
#[derive(Default)]
struct Series {
    by_key: HashMap<SeriesKey, Published>,
    swept: Option<Instant>,
}

impl Series {
    /// The remembered Events. Expired ones are dropped once per [`SWEEP_EVERY`], not on every publish: with
    /// 10,000 MCPServers each publish would otherwise scan 10,000 series. A lingering expired series is never
    /// counted: [`Recorder::publish`] checks the TTL of the one it finds.
    fn live(&mut self) -> &mut HashMap<SeriesKey, Published> {
        if self.swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
            self.by_key.retain(|_, p| p.last.elapsed() < SERIES_TTL);
            self.swept = Some(Instant::now());
        }
        &mut self.by_key
    }
}

/// How often expired series are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            published: Mutex::default(),
        }
    }

    /// Publishes `ev` about `regarding`: a new Event, or a higher count on the Event with the same note.
    pub async fn publish(&self, ev: &EventNote, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let note = cut(&ev.note, MAX_NOTE);
        let key = SeriesKey {
            type_: ev.type_,
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            note: note.clone(),
            uid: regarding.uid.clone(),
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
        };
        let ns = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let api = Api::<KubeEvent>::namespaced(self.client.clone(), &ns);
        let now = k8s_openapi::jiff::Timestamp::now();
        // The series are locked only to read or record them, never across a request to the API server: every
        // reconcile that changes an allowlist publishes, and one slow request must not hold up all the others
        // (at 10,000 MCPServers a cold start is otherwise one Event request at a time). Two publishes of one
        // series at once cannot happen: the controller never reconciles one object twice at once.
        let series = {
            let mut published = self.published.lock().await;
            published
                .live()
                .get(&key)
                .filter(|p| p.last.elapsed() < SERIES_TTL)
                .map(|p| (p.name.clone(), p.count))
        };
        if let Some((name, count)) = series {
            let count = count + 1;
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) }
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if let Some(p) = self.published.lock().await.by_key.get_mut(&key) {
                        p.count = count;
                        p.last = Instant::now();
                    }
                    return Ok(());
                }
                // Deleted (TTL on the API server, or by hand): publish it anew.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            reason: Some(ev.reason.clone()),
            action: Some(ev.action.clone()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        let mut series = self.published.lock().await;
        let published = series.live();
        if published.len() >= MAX_REMEMBERED
            && let Some(oldest) = published
                .iter()
                .min_by_key(|(_, p)| p.last)
                .map(|(k, _)| k.clone())
        {
            published.remove(&oldest);
        }
        published.insert(
            key,
            Published {
                name,
                count: 1,
                last: Instant::now(),
            },
        );
        Ok(())
    }
}

fn diff<'a>(before: &[&'a str], after: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let added = after.iter().filter(|v| !before.contains(v)).copied().collect();
    let removed = before.iter().filter(|v| !after.contains(v)).copied().collect();
    (added, removed)
}

fn listed(values: &[&str], shown: usize) -> String {
    let mut s = values.iter().take(shown).copied().collect::<Vec<_>>().join(", ");
    if values.len() > shown {
        s.push_str(&format!(" (+{} more)", values.len() - shown));
    }
    s
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The note of an `AllowlistUpdated` Event: what this change added and removed (a fact about the change that stays
/// true after later changes), and the size of the allowlist it left. `before` is `None` for the first allowlist.
pub fn allowlist_change_note(before: Option<(&[&str], &[&str])>, hosts: &[&str], origins: &[&str]) -> String {
    const SHOWN: usize = 10;
    let mut parts = Vec::new();
    match before {
        None => {
            parts.push(format!("hosts set to {}", listed(hosts, SHOWN)));
            if !origins.is_empty() {
                parts.push(format!("origins set to {}", listed(origins, SHOWN)));
            }
        }
        Some((old_hosts, old_origins)) => {
            for (what, old, new) in [("hosts", old_hosts, hosts), ("origins", old_origins, origins)] {
                let (added, removed) = diff(old, new);
                if !added.is_empty() {
                    parts.push(format!("{what} added: {}", listed(&added, SHOWN)));
                }
                if !removed.is_empty() {
                    parts.push(format!("{what} removed: {}", listed(&removed, SHOWN)));
                }
            }
        }
    }
    let summary = format!(
        "now {} and {} (status.allowedHosts, status.allowedOrigins)",
        plural(hosts.len(), "host"),
        plural(origins.len(), "origin")
    );
    cut(
        &format!("Allowlist changed: {}; {summary}", parts.join("; ")),
        MAX_NOTE,
    )
}

/// The note of an `UnguardedPods` Event: the pods found without the guard since the last status (a fact that
/// stays true), and the commands that put the guard into them.
pub fn unguarded_pods_note(new: &[&crate::crd::UnguardedPodStatus]) -> String {
    const SHOWN: usize = 5;
    let names: Vec<&str> = new.iter().map(|p| p.name.as_str()).collect();
    let mut fixes: Vec<&str> = Vec::new();
    for p in new {
        if !fixes.contains(&p.fix.as_str()) {
            fixes.push(&p.fix);
        }
    }
    let mut fix = fixes.iter().take(SHOWN).copied().collect::<Vec<_>>().join("; ");
    if fixes.len() > SHOWN {
        fix.push_str(&format!(
            " (+{} more in status.unguardedPods)",
            fixes.len() - SHOWN
        ));
    }
    cut(
        &format!(
            "{} without the guard: {} (admitted while the webhook was unreachable with failurePolicy Ignore, or \
             created before the MCPServer or the webhook); to inject it: {fix}",
            plural(names.len(), "pod"),
            listed(&names, SHOWN)
        ),
        MAX_NOTE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_notes_name_what_changed() {
        // (before, hosts, origins, note)
        type Lists<'a> = (&'a [&'a str], &'a [&'a str]);
        type Case<'a> = (Option<Lists<'a>>, &'a [&'a str], &'a [&'a str], &'a str);
        let cases: &[Case<'_>] = &[
            (
                None,
                &["a.example.com", "svc"],
                &["https://a.example.com"],
                "Allowlist changed: hosts set to a.example.com, svc; origins set to https://a.example.com; now 2 \
                 hosts and 1 origin (status.allowedHosts, status.allowedOrigins)",
            ),
            (
                Some((&["a.example.com", "svc"], &["https://a.example.com"])),
                &["b.example.com", "svc"],
                &["https://b.example.com"],
                "Allowlist changed: hosts added: b.example.com; hosts removed: a.example.com; origins added: \
                 https://b.example.com; origins removed: https://a.example.com; now 2 hosts and 1 origin \
                 (status.allowedHosts, status.allowedOrigins)",
            ),
            (
                Some((&["svc"], &[])),
                &["svc"],
                &["http://svc"],
                "Allowlist changed: origins added: http://svc; now 1 host and 1 origin (status.allowedHosts, \
                 status.allowedOrigins)",
            ),
            (
                None,
                &["h"],
                &[],
                "Allowlist changed: hosts set to h; now 1 host and 0 origins (status.allowedHosts, \
                 status.allowedOrigins)",
            ),
        ];
        for (before, hosts, origins, want) in cases {
            assert_eq!(allowlist_change_note(*before, hosts, origins), *want);
        }
    }

    #[test]
    fn long_notes_are_cut_to_the_api_limit() {
        let hosts: Vec<String> = (0..20)
            .map(|i| format!("{}.example.com", "x".repeat(100 + i)))
            .collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let note = allowlist_change_note(None, &hosts, &[]);
        assert!(note.len() <= MAX_NOTE, "{}", note.len());
        assert!(note.ends_with('…'));
        assert_eq!(cut("héllo", 5), "h…");
        assert_eq!(cut("short", 10), "short");
    }
}
