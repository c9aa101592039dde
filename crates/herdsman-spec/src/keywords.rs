//! The words each enumerated field accepts, ZLayer's spellings included, in one place.
//!
//! Matching ignores ASCII case and treats `-` as `_`, so `on-failure`, `On_Failure` and
//! `on_failure` are one word. The first spelling listed for a value is the one herdsman
//! writes back ([`Vocabulary::word`]) and the only one named in messages.

use crate::model::{
    DependencyCondition, OnUnhealthy, PanicAction, Protocol, RestartPolicy, ServiceKind,
    StepFailure,
};

/// The spellings of one enumerated field.
pub(crate) struct Vocabulary<T: 'static> {
    /// What the field names, for messages: `check type`.
    pub(crate) noun: &'static str,
    /// Accepted spellings (normalized: lowercase, `_`), canonical spelling first per value.
    pub(crate) words: &'static [(&'static str, T)],
}

impl<T: Copy + PartialEq> Vocabulary<T> {
    /// The value `text` spells, or a message naming what was expected.
    pub(crate) fn parse(&self, text: &str) -> Result<T, String> {
        let norm = text.trim().to_ascii_lowercase().replace('-', "_");
        self.words
            .iter()
            .find(|(w, _)| *w == norm)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                format!(
                    "unknown {} \"{}\" (expected {})",
                    self.noun,
                    text,
                    self.expected()
                )
            })
    }

    /// The canonical spelling of `value`.
    pub(crate) fn word(&self, value: T) -> &'static str {
        self.words
            .iter()
            .find(|(_, v)| *v == value)
            .map(|(w, _)| *w)
            .unwrap_or("?")
    }

    /// `a, b or c`: the canonical spellings.
    pub(crate) fn expected(&self) -> String {
        let mut canon: Vec<&str> = Vec::new();
        for (w, v) in self.words {
            if self.word(*v) == *w {
                canon.push(w);
            }
        }
        one_of(&canon)
    }
}

/// `a`, `a or b`, `a, b or c`.
pub(crate) fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

/// Scale modes (the `scale.mode` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleMode {
    Fixed,
    Adaptive,
    Manual,
}

/// Health check types (the `check.type` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckType {
    Tcp,
    Http,
    Command,
}

/// Built-in init actions (an init step's `uses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uses {
    WaitTcp,
    WaitHttp,
    Run,
}

/// Init failure actions (the `errors.on_init_failure.action` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitFailureAction {
    Fail,
    Restart,
    Backoff,
}

pub(crate) const RTYPE: Vocabulary<ServiceKind> = Vocabulary {
    noun: "rtype",
    words: &[("service", ServiceKind::Service), ("job", ServiceKind::Job)],
};

pub(crate) const SCALE_MODE: Vocabulary<ScaleMode> = Vocabulary {
    noun: "scale mode",
    words: &[
        ("fixed", ScaleMode::Fixed),
        ("adaptive", ScaleMode::Adaptive),
        ("manual", ScaleMode::Manual),
    ],
};

/// ZLayer's `websocket` is HTTP as far as herdsman is concerned (ports and checks).
pub(crate) const PROTOCOL: Vocabulary<Protocol> = Vocabulary {
    noun: "protocol",
    words: &[
        ("http", Protocol::Http),
        ("https", Protocol::Https),
        ("tcp", Protocol::Tcp),
        ("udp", Protocol::Udp),
        ("websocket", Protocol::Http),
    ],
};

/// ZLayer's `ready` (available for routing) is `healthy` in herdsman, where a replica is
/// ready exactly when it is running and healthy.
pub(crate) const CONDITION: Vocabulary<DependencyCondition> = Vocabulary {
    noun: "dependency condition",
    words: &[
        ("started", DependencyCondition::Started),
        ("healthy", DependencyCondition::Healthy),
        ("ready", DependencyCondition::Healthy),
    ],
};

pub(crate) const CHECK_TYPE: Vocabulary<CheckType> = Vocabulary {
    noun: "check type",
    words: &[
        ("tcp", CheckType::Tcp),
        ("http", CheckType::Http),
        ("command", CheckType::Command),
    ],
};

pub(crate) const ON_UNHEALTHY: Vocabulary<OnUnhealthy> = Vocabulary {
    noun: "on_unhealthy action",
    words: &[
        ("isolate", OnUnhealthy::Isolate),
        ("restart", OnUnhealthy::Restart),
        ("none", OnUnhealthy::None),
    ],
};

pub(crate) const USES: Vocabulary<Uses> = Vocabulary {
    noun: "init action",
    words: &[
        ("init.wait_tcp", Uses::WaitTcp),
        ("init.wait_http", Uses::WaitHttp),
        ("init.run", Uses::Run),
    ],
};

pub(crate) const STEP_FAILURE: Vocabulary<StepFailure> = Vocabulary {
    noun: "on_failure action",
    words: &[
        ("fail", StepFailure::Fail),
        ("warn", StepFailure::Warn),
        ("continue", StepFailure::Continue),
    ],
};

pub(crate) const INIT_FAILURE: Vocabulary<InitFailureAction> = Vocabulary {
    noun: "init failure action",
    words: &[
        ("fail", InitFailureAction::Fail),
        ("restart", InitFailureAction::Restart),
        ("backoff", InitFailureAction::Backoff),
    ],
};

pub(crate) const PANIC_ACTION: Vocabulary<PanicAction> = Vocabulary {
    noun: "panic action",
    words: &[
        ("restart", PanicAction::Restart),
        ("shutdown", PanicAction::Shutdown),
        ("isolate", PanicAction::Isolate),
    ],
};

pub(crate) const UPDATE_STRATEGY: Vocabulary<crate::model::UpdateStrategy> = Vocabulary {
    noun: "update strategy",
    words: &[
        ("rolling", crate::model::UpdateStrategy::Rolling),
        ("recreate", crate::model::UpdateStrategy::Recreate),
    ],
};

pub(crate) const BOOLEAN: Vocabulary<bool> = Vocabulary {
    noun: "boolean",
    words: &[("true", true), ("false", false)],
};

pub(crate) const RESTART_POLICY: Vocabulary<RestartPolicy> = Vocabulary {
    noun: "restart policy",
    words: &[
        ("always", RestartPolicy::Always),
        ("on_failure", RestartPolicy::OnFailure),
        ("never", RestartPolicy::Never),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_ignore_case_and_dashes() {
        assert_eq!(
            RESTART_POLICY.parse("On-Failure"),
            Ok(RestartPolicy::OnFailure)
        );
        assert_eq!(USES.parse("init.wait-tcp"), Ok(Uses::WaitTcp));
    }

    #[test]
    fn unknown_words_name_the_canonical_alternatives() {
        assert_eq!(
            CHECK_TYPE.parse("exec"),
            Err("unknown check type \"exec\" (expected tcp, http or command)".to_string())
        );
        assert_eq!(
            CONDITION.parse("up"),
            Err("unknown dependency condition \"up\" (expected started or healthy)".to_string())
        );
    }

    #[test]
    fn zlayer_aliases_map_to_herdsman_values_and_write_back_canonically() {
        assert_eq!(CONDITION.parse("ready"), Ok(DependencyCondition::Healthy));
        assert_eq!(PROTOCOL.parse("websocket"), Ok(Protocol::Http));
        assert_eq!(CONDITION.word(DependencyCondition::Healthy), "healthy");
        assert_eq!(PROTOCOL.word(Protocol::Http), "http");
    }
}
