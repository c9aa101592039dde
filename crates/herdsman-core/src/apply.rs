//! Applying a changed spec: the per-service diff against the running spec, as a plan.
//! Pure: computed from the two specs.

use std::fmt;

use herdsman_spec::{Deployment, Service, UpdateStrategy};
use serde::{Deserialize, Serialize};

use crate::rollout::same_but_scale;

/// What applying a spec does to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Same spec: not touched.
    Unchanged,
    /// Only the replica count changed: scaled, nothing replaced.
    Scale {
        /// Replicas now.
        from: u32,
        /// Replicas after.
        to: u32,
    },
    /// What the replicas run changed: replaced per the service's `update` block.
    Roll {
        /// `rolling` or `recreate`.
        strategy: String,
        /// Replicas after.
        replicas: u32,
        /// The spec's fields that changed (`command`, `env`, `health`...), by name.
        #[serde(default)]
        fields: Vec<String>,
    },
    /// A new service: started (in dependency order).
    Add {
        /// Replicas.
        replicas: u32,
    },
    /// A service no longer in the spec: stopped (in reverse dependency order).
    Remove,
}

/// One service's part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    /// Service name.
    pub service: String,
    /// What happens to it.
    #[serde(flatten)]
    pub change: Change,
}

/// What `apply` does (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyPlan {
    /// The revision the spec becomes (the current one when nothing changes).
    pub revision: u64,
    /// Every service of either spec: added and kept ones in the new spec's start order,
    /// then removed ones in reverse start order of the old spec.
    pub changes: Vec<ServiceChange>,
}

impl ApplyPlan {
    /// Whether anything changes at all.
    pub fn is_noop(&self) -> bool {
        self.changes.iter().all(|c| c.change == Change::Unchanged)
    }

    /// Services whose replicas are replaced.
    pub fn rolled(&self) -> Vec<String> {
        self.changes
            .iter()
            .filter(|c| matches!(c.change, Change::Roll { .. }))
            .map(|c| c.service.clone())
            .collect()
    }
}

impl fmt::Display for ApplyPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_noop() {
            return writeln!(f, "no change: every service already runs this spec");
        }
        writeln!(f, "revision {}:", self.revision)?;
        for c in &self.changes {
            let what = match &c.change {
                Change::Unchanged => "unchanged".to_string(),
                Change::Scale { from, to } => format!("scale {from} -> {to} replicas"),
                Change::Roll {
                    strategy,
                    replicas,
                    fields,
                } => {
                    format!(
                        "roll out ({strategy}), {replicas} replicas; changed: {}",
                        fields.join(", ")
                    )
                }
                Change::Add { replicas } => format!("add, {replicas} replicas"),
                Change::Remove => "remove".to_string(),
            };
            writeln!(f, "  {:<20} {what}", c.service)?;
        }
        Ok(())
    }
}

/// Diff `new` against `old`, service by service.
pub(crate) fn diff(old: &Deployment, new: &Deployment, revision: u64) -> ApplyPlan {
    let mut changes = Vec::new();
    for name in new.start_order() {
        let Some(n) = new.service(name) else { continue };
        let change = match old.service(name) {
            None => Change::Add {
                replicas: n.initial_replicas(),
            },
            Some(o) if o == n => Change::Unchanged,
            Some(o) if same_but_scale(o, n) => Change::Scale {
                from: o.initial_replicas(),
                to: n.initial_replicas(),
            },
            Some(o) => Change::Roll {
                strategy: match n.update.strategy {
                    UpdateStrategy::Rolling => "rolling",
                    UpdateStrategy::Recreate => "recreate",
                }
                .to_string(),
                replicas: n.initial_replicas(),
                fields: changed_fields(o, n),
            },
        };
        changes.push(ServiceChange {
            service: name.to_string(),
            change,
        });
    }
    for name in old.start_order().into_iter().rev() {
        if new.service(name).is_none() {
            changes.push(ServiceChange {
                service: name.to_string(),
                change: Change::Remove,
            });
        }
    }
    let revision = if changes.iter().all(|c| c.change == Change::Unchanged) {
        revision
    } else {
        revision + 1
    };
    ApplyPlan { revision, changes }
}

/// The top-level fields of a service's spec that differ between `old` and `new`, in the
/// order of their names; `scale` is left out (a scale alone never rolls).
fn changed_fields(old: &Service, new: &Service) -> Vec<String> {
    let (Ok(serde_json::Value::Object(o)), Ok(serde_json::Value::Object(n))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    n.iter()
        .filter(|(k, v)| k.as_str() != "scale" && o.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_spec::{Command, Scale, ServiceKind, Template};

    fn svc(name: &str, replicas: u32, arg: &str) -> Service {
        Service {
            command: Some(Command {
                entrypoint: vec![Template::literal("app")],
                args: vec![Template::literal(arg)],
                workdir: None,
            }),
            scale: Scale::Fixed { replicas },
            ..Service::new(name, ServiceKind::Service)
        }
    }

    fn dep(services: Vec<Service>) -> Deployment {
        Deployment {
            name: "shop".into(),
            services,
        }
    }

    #[test]
    fn each_service_is_unchanged_scaled_rolled_added_or_removed() {
        let old = dep(vec![
            svc("db", 1, "a"),
            svc("api", 2, "a"),
            svc("web", 1, "a"),
            svc("gone", 1, "a"),
        ]);
        let new = dep(vec![
            svc("db", 1, "a"),
            svc("api", 3, "a"),
            svc("web", 1, "b"),
            svc("cache", 2, "a"),
        ]);
        let plan = diff(&old, &new, 4);
        let got: Vec<(&str, &Change)> = plan
            .changes
            .iter()
            .map(|c| (c.service.as_str(), &c.change))
            .collect();
        assert_eq!(
            got,
            vec![
                ("db", &Change::Unchanged),
                ("api", &Change::Scale { from: 2, to: 3 }),
                (
                    "web",
                    &Change::Roll {
                        strategy: "rolling".into(),
                        replicas: 1,
                        fields: vec!["command".into()],
                    }
                ),
                ("cache", &Change::Add { replicas: 2 }),
                ("gone", &Change::Remove),
            ]
        );
        assert_eq!(plan.revision, 5);
        assert_eq!(plan.rolled(), vec!["web".to_string()]);
        let text = plan.to_string();
        assert!(
            text.contains("web")
                && text.contains("roll out (rolling), 1 replicas; changed: command"),
            "{text}"
        );
    }

    #[test]
    fn the_same_spec_is_a_no_op_that_keeps_the_revision() {
        let d = dep(vec![svc("db", 1, "a")]);
        let plan = diff(&d, &d.clone(), 3);
        assert!(plan.is_noop());
        assert_eq!(plan.revision, 3);
        assert!(plan.to_string().starts_with("no change"));
    }
}
