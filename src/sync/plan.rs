//! The plan: what each provider is missing or has stale, as creates, updates and
//! deletes. A pure function of the canonical record and the links' snapshots.

use crate::model::{project, Field, FieldSet, Projection, ProviderName, RemoteId};
use crate::providers::Capabilities;

/// One provider as the planner sees it for one customer.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub provider: &'a ProviderName,
    pub caps: Capabilities,
    pub fields: &'a FieldSet,
    pub link: Option<LinkState<'a>>,
    /// False when nothing may be pushed to this provider for this customer (its
    /// listing failed this cycle, a delete is held, an operation is parked).
    pub writable: bool,
    /// False when this provider's listing did not prove itself complete this cycle:
    /// it may hold records it did not show, so updates only (DESIGN 4c).
    pub creates_and_deletes: bool,
}

#[derive(Debug, Clone)]
pub struct LinkState<'a> {
    pub remote_id: &'a RemoteId,
    pub snapshot: Option<&'a Projection>,
    /// The record was deleted in the provider.
    pub gone: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Create {
        payload: Projection,
    },
    Update {
        remote_id: RemoteId,
        payload: Projection,
        changed: Vec<crate::model::Field>,
    },
    Delete {
        remote_id: RemoteId,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Update { .. } => "update",
            Op::Delete { .. } => "delete",
        }
    }
}

/// `desired` with each field the update leaves as it is (equal once normalized) spelled
/// as the provider has it (an email in capitals, a phone with spaces): what the
/// provider holds after the write, so that the snapshot kept of a write whose answer
/// does not carry the record (Ecwid) is what the next listing shows.
fn as_spelled(mut desired: Projection, snapshot: &Projection, changed: &[Field]) -> Projection {
    let kept: Vec<(Field, String)> = snapshot
        .iter()
        .filter(|(f, v)| !changed.contains(f) && desired.get(f).is_some_and(|d| d != *v))
        .filter(|(f, _)| desired.same(snapshot, f))
        .map(|(f, v)| (f.clone(), v.to_string()))
        .collect();
    for (f, v) in kept {
        desired.set(f, Some(v));
    }
    desired
}

/// Plans one customer across its targets. A tombstoned customer is deleted wherever a
/// live link exists and the provider can delete; otherwise each provider gets the
/// canonical record projected onto its fields, compared with its snapshot.
pub fn plan<'a>(
    canonical: &Projection,
    tombstoned: bool,
    targets: &[Target<'a>],
) -> Vec<(&'a ProviderName, Op)> {
    let mut ops = Vec::new();
    for t in targets.iter().filter(|t| t.writable) {
        let op = match (&t.link, tombstoned) {
            (Some(link), true) if !link.gone && t.caps.delete && t.creates_and_deletes => {
                Some(Op::Delete {
                    remote_id: link.remote_id.clone(),
                })
            }
            (_, true) => None,
            (Some(link), false) if link.gone => None,
            (None, false) => (t.caps.create
                && t.creates_and_deletes
                && canonical.email().is_some())
            .then(|| Op::Create {
                payload: project(canonical, t.fields),
            }),
            (Some(link), false) => {
                let desired = project(canonical, t.fields);
                let changed = match link.snapshot {
                    Some(snapshot) => t.fields.stale(&desired, snapshot),
                    None => Vec::new(),
                };
                (t.caps.update && !changed.is_empty()).then(|| Op::Update {
                    remote_id: link.remote_id.clone(),
                    payload: match link.snapshot {
                        Some(snapshot) => as_spelled(desired, snapshot, &changed),
                        None => desired,
                    },
                    changed,
                })
            }
        };
        if let Some(op) = op {
            ops.push((t.provider, op));
        }
    }
    ops
}
