//! Raw serde types: what the YAML says, before any value is checked.
//!
//! Only the document's shape is enforced here: unknown fields, a list where a map is due.
//! Every scalar is kept as text ([`Scalar`]) and every field is optional, so that
//! validation can report all bad or missing values at once, with its own messages.
//!
//! serde stops at the first shape error. To report more than one, [`read`] re-reads a
//! document that failed, skipping the part (a service, or the top-level fields) that
//! broke, so that every broken part yields its own located error and every sound service
//! is still validated.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// A scalar as written (string, number or boolean), kept as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) String);

impl Scalar {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A map kept in document order, duplicates included (validation reports them).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Entries<V>(pub(crate) Vec<(Scalar, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Scalar, V>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        deserializer.deserialize_map(Vis(std::marker::PhantomData))
    }
}

/// One service as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) rtype: Option<Scalar>,
    pub(crate) image: Option<RawImage>,
    pub(crate) command: Option<RawCommand>,
    pub(crate) env: Option<Entries<Scalar>>,
    pub(crate) scale: Option<RawScale>,
    pub(crate) endpoints: Option<Vec<RawEndpoint>>,
    pub(crate) network: Option<Scalar>,
    pub(crate) depends: Option<Vec<RawDependency>>,
    pub(crate) health: Option<RawHealth>,
    pub(crate) init: Option<RawInit>,
    pub(crate) errors: Option<RawErrors>,
    pub(crate) restart: Option<RawRestart>,
    pub(crate) stop_signal: Option<Scalar>,
    pub(crate) stop_grace_period: Option<Scalar>,
    pub(crate) min_ready: Option<Scalar>,
    pub(crate) update: Option<RawUpdate>,
    pub(crate) placement: Option<RawPlacement>,
}

/// `placement` as written (ext): which cluster nodes may run the service's replicas.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlacement {
    pub(crate) nodes: Option<Vec<Scalar>>,
    pub(crate) spread: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdate {
    pub(crate) strategy: Option<Scalar>,
    pub(crate) max_surge: Option<Scalar>,
    pub(crate) max_unavailable: Option<Scalar>,
    pub(crate) min_ready: Option<Scalar>,
    pub(crate) progress_deadline: Option<Scalar>,
    pub(crate) auto_revert: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawImage {
    pub(crate) name: Option<Scalar>,
    pub(crate) pull_policy: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommand {
    pub(crate) entrypoint: Option<Vec<Scalar>>,
    pub(crate) args: Option<Vec<Scalar>>,
    pub(crate) workdir: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScale {
    pub(crate) mode: Option<Scalar>,
    pub(crate) replicas: Option<Scalar>,
    pub(crate) min: Option<Scalar>,
    pub(crate) max: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub(crate) name: Option<Scalar>,
    pub(crate) protocol: Option<Scalar>,
    pub(crate) port: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDependency {
    pub(crate) service: Option<Scalar>,
    pub(crate) condition: Option<Scalar>,
    pub(crate) timeout: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub(crate) start_grace: Option<Scalar>,
    pub(crate) start_interval: Option<Scalar>,
    pub(crate) interval: Option<Scalar>,
    pub(crate) timeout: Option<Scalar>,
    pub(crate) retries: Option<Scalar>,
    pub(crate) success_threshold: Option<Scalar>,
    pub(crate) on_unhealthy: Option<Scalar>,
    pub(crate) check: Option<RawCheck>,
}

/// A check as written: the fields of every check type, `type` saying which apply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    #[serde(rename = "type")]
    pub(crate) kind: Option<Scalar>,
    pub(crate) host: Option<Scalar>,
    pub(crate) port: Option<Scalar>,
    pub(crate) url: Option<Scalar>,
    pub(crate) expect_status: Option<Scalar>,
    pub(crate) command: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInit {
    pub(crate) steps: Option<Vec<RawStep>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub(crate) id: Option<Scalar>,
    pub(crate) uses: Option<Scalar>,
    pub(crate) with: Option<RawWith>,
    pub(crate) timeout: Option<Scalar>,
    pub(crate) retry: Option<Scalar>,
    pub(crate) on_failure: Option<Scalar>,
}

/// An init step's `with` as written: the parameters of every action, `uses` saying which
/// apply. `timeout` is ZLayer's spelling of the step timeout (seconds or a duration).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWith {
    pub(crate) host: Option<Scalar>,
    pub(crate) port: Option<Scalar>,
    pub(crate) url: Option<Scalar>,
    pub(crate) expect_status: Option<Scalar>,
    pub(crate) command: Option<Scalar>,
    pub(crate) timeout: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawErrors {
    pub(crate) on_init_failure: Option<RawInitFailure>,
    pub(crate) on_panic: Option<RawPanic>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInitFailure {
    pub(crate) action: Option<Scalar>,
    pub(crate) max_retries: Option<Scalar>,
    pub(crate) delay: Option<Scalar>,
    pub(crate) backoff: Option<RawBackoff>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPanic {
    pub(crate) action: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRestart {
    pub(crate) policy: Option<Scalar>,
    pub(crate) max_restarts: Option<Scalar>,
    pub(crate) window: Option<Scalar>,
    pub(crate) backoff: Option<RawBackoff>,
    pub(crate) reset_after: Option<Scalar>,
    pub(crate) give_up_after: Option<Scalar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackoff {
    pub(crate) initial: Option<Scalar>,
    pub(crate) max: Option<Scalar>,
    pub(crate) multiplier: Option<Scalar>,
    pub(crate) jitter: Option<Scalar>,
}

/// The whole document as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RawDeployment {
    pub(crate) version: Option<Scalar>,
    pub(crate) deployment: Option<Scalar>,
    /// `None` when the document has no `services` key.
    pub(crate) services: Option<Vec<RawEntry>>,
}

/// One entry of `services`: its name and, unless it failed to read, its body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEntry {
    pub(crate) name: Scalar,
    /// `None` when this service's shape was wrong (the serde error is already reported).
    pub(crate) service: Option<RawService>,
}

/// What [`read`] made of a document.
#[derive(Debug, Default)]
pub(crate) struct RawRead {
    pub(crate) doc: RawDeployment,
    /// Whether `version` and `deployment` were read; if not, their error is in `errors`.
    pub(crate) top_read: bool,
    /// Shape errors, each with the location serde_yaml gave.
    pub(crate) errors: Vec<serde_yaml::Error>,
}

/// Read a document's shape, collecting one error per broken part (see the module doc).
///
/// Each pass reads everything not yet known to be broken. When a pass fails inside a
/// service (or the top-level fields), that part is skipped from then on and the document
/// is read again; a failure anywhere else (syntax, `services` not a map) ends reading.
/// At most `passes` reads: enough to report many broken services, bounded so that a huge
/// broken document costs a bounded number of parses.
pub(crate) fn read(source: &str, passes: usize) -> RawRead {
    let mut skip = Skip::default();
    let mut errors = Vec::new();
    for _ in 0..passes {
        let failed = Cell::new(Part::Structure);
        let seed = DocumentSeed {
            skip: &skip,
            failed: &failed,
        };
        match seed.deserialize(serde_yaml::Deserializer::from_str(source)) {
            Ok(doc) => {
                return RawRead {
                    doc,
                    top_read: !skip.top,
                    errors,
                }
            }
            Err(e) => {
                errors.push(e);
                match failed.get() {
                    Part::Top if !skip.top => skip.top = true,
                    Part::Service(i) if !skip.services.contains(&i) => {
                        skip.services.insert(i);
                    }
                    // The document's structure is broken, or a skipped part still fails
                    // (its syntax is broken): nothing more can be read.
                    _ => break,
                }
            }
        }
    }
    RawRead {
        doc: RawDeployment::default(),
        top_read: false,
        errors,
    }
}

/// Parts of the document a pass skips unchecked, because an earlier pass found them broken.
#[derive(Debug, Default)]
struct Skip {
    top: bool,
    services: HashSet<usize>,
}

/// Which part of the document a pass was reading when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `version`, `deployment` or an unknown top-level key.
    Top,
    /// The body of the service at this index.
    Service(usize),
    /// Anything else: the document's structure or syntax.
    Structure,
}

const TOP_FIELDS: &[&str] = &["version", "deployment", "services"];

struct DocumentSeed<'a> {
    skip: &'a Skip,
    failed: &'a Cell<Part>,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = RawDeployment;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_struct("deployment spec", TOP_FIELDS, self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = RawDeployment;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map with version, deployment and services")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDeployment, A::Error> {
        let top = !self.skip.top;
        let mut doc = RawDeployment::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key::<Scalar>()? {
            let field = TOP_FIELDS.iter().copied().find(|f| *f == key.as_str());
            let Some(field) = field else {
                if top {
                    self.failed.set(Part::Top);
                    return Err(de::Error::unknown_field(key.as_str(), TOP_FIELDS));
                }
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if seen.contains(&field) {
                if field != "services" {
                    self.failed.set(Part::Top);
                }
                return Err(de::Error::duplicate_field(field));
            }
            seen.push(field);
            match field {
                "services" => {
                    doc.services = Some(map.next_value_seed(ServicesSeed {
                        skip: self.skip,
                        failed: self.failed,
                    })?)
                }
                _ if !top => {
                    map.next_value::<IgnoredAny>()?;
                }
                "version" => {
                    self.failed.set(Part::Top);
                    doc.version = map.next_value()?;
                    self.failed.set(Part::Structure);
                }
                _ => {
                    self.failed.set(Part::Top);
                    doc.deployment = map.next_value()?;
                    self.failed.set(Part::Structure);
                }
            }
        }
        Ok(doc)
    }
}

struct ServicesSeed<'a> {
    skip: &'a Skip,
    failed: &'a Cell<Part>,
}

impl<'de> DeserializeSeed<'de> for ServicesSeed<'_> {
    type Value = Vec<RawEntry>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ServicesSeed<'_> {
    type Value = Vec<RawEntry>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of service name to service")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<RawEntry>, E> {
        Ok(Vec::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<RawEntry>, A::Error> {
        let mut out = Vec::new();
        while let Some(name) = map.next_key::<Scalar>()? {
            let index = out.len();
            let service = if self.skip.services.contains(&index) {
                map.next_value::<IgnoredAny>()?;
                None
            } else {
                self.failed.set(Part::Service(index));
                // `name: ~` is a service with every field defaulted.
                let body = map.next_value::<Option<RawService>>()?.unwrap_or_default();
                self.failed.set(Part::Structure);
                Some(body)
            };
            out.push(RawEntry { name, service });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sound_document_is_read_in_one_pass() {
        let r = read(
            "version: v1\ndeployment: d\nservices:\n  a: {image: {name: x}}\n",
            25,
        );
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.top_read);
        let services = r.doc.services.unwrap_or_default();
        assert_eq!(services.len(), 1);
        assert!(services[0].service.is_some());
    }

    #[test]
    fn each_broken_service_yields_its_own_error_and_sound_ones_are_kept() {
        let src = "\
version: v1
deployment: d
services:
  a: {imag: x}
  b: {image: {name: x}}
  c: {health: 5}
";
        let r = read(src, 25);
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        assert!(r.top_read);
        let services = r.doc.services.unwrap_or_default();
        let bodies: Vec<bool> = services.iter().map(|e| e.service.is_some()).collect();
        assert_eq!(bodies, vec![false, true, false]);
    }

    #[test]
    fn scalars_of_every_kind_are_kept_as_text() {
        let r: Vec<Scalar> = serde_yaml::from_str("[a, 1, -2, 2.5, true]").unwrap_or_default();
        let texts: Vec<&str> = r.iter().map(Scalar::as_str).collect();
        assert_eq!(texts, vec!["a", "1", "-2", "2.5", "true"]);
    }
}
