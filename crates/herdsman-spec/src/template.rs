//! Per-replica templates: `${REPLICA}`, `${PORT}`, `${PORT_<NAME>}`, `${SERVICE}`,
//! `${DEPLOYMENT}`, parsed once at validation and expanded for each replica.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One variable a template may name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateVar {
    /// `${REPLICA}`: 0-based replica index.
    Replica,
    /// `${PORT}`: first endpoint's port + replica index.
    Port,
    /// `${PORT_<NAME>}`: that endpoint's port + replica index (name upper-cased, `-` as `_`).
    PortNamed(String),
    /// `${SERVICE}`: the service name.
    Service,
    /// `${DEPLOYMENT}`: the deployment name.
    Deployment,
}

impl fmt::Display for TemplateVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateVar::Replica => f.write_str("${REPLICA}"),
            TemplateVar::Port => f.write_str("${PORT}"),
            TemplateVar::PortNamed(n) => write!(f, "${{PORT_{n}}}"),
            TemplateVar::Service => f.write_str("${SERVICE}"),
            TemplateVar::Deployment => f.write_str("${DEPLOYMENT}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(TemplateVar),
}

/// A string with per-replica variables, already parsed.
///
/// Only `${` starts a variable; `$${` is a literal `${`. Every other `$` is literal, so
/// shell text such as `$$`, `$HOME` or `$?` passes through unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// `${` without a closing `}`.
    Unclosed,
    /// `${NAME}` where NAME is not a known variable.
    UnknownVariable(String),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Unclosed => f.write_str("unclosed \"${\" (expected \"${NAME}\")"),
            TemplateError::UnknownVariable(v) => write!(
                f,
                "unknown template variable \"${{{v}}}\" (expected REPLICA, PORT, PORT_<ENDPOINT>, SERVICE or DEPLOYMENT)"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    /// Parse a template. Named ports are checked against endpoints by validation, not here.
    ///
    /// # Errors
    /// An unclosed `${` or an unknown variable name.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = source;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix("${") {
                lit.push_str("${");
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body.find('}').ok_or(TemplateError::Unclosed)?;
                let name = &body[..end];
                let var = match name {
                    "REPLICA" => TemplateVar::Replica,
                    "PORT" => TemplateVar::Port,
                    "SERVICE" => TemplateVar::Service,
                    "DEPLOYMENT" => TemplateVar::Deployment,
                    n if n.starts_with("PORT_") && n.len() > 5 => {
                        TemplateVar::PortNamed(n[5..].to_string())
                    }
                    other => return Err(TemplateError::UnknownVariable(other.to_string())),
                };
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(Part::Var(var));
                rest = &body[end + 1..];
            } else {
                lit.push('$');
                rest = after;
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// A template with no variables: `s` is taken as it is (a `${` in it is escaped in
    /// the source, so the source parses back to the same template).
    pub fn literal(s: impl Into<String>) -> Template {
        let s: String = s.into();
        Template {
            source: s.replace("${", "$${"),
            parts: if s.is_empty() {
                Vec::new()
            } else {
                vec![Part::Literal(s)]
            },
        }
    }

    /// The string as written in the spec.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables this template uses.
    pub fn vars(&self) -> impl Iterator<Item = &TemplateVar> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Literal(_) => None,
        })
    }

    /// Expand for one replica. A named port the replica does not have expands to an empty
    /// string (validation rejects such specs, so this only happens with hand-built values).
    pub fn expand(&self, vars: &ReplicaVars) -> String {
        let mut out = String::with_capacity(self.source.len() + 8);
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(v) => {
                    if let Some(value) = vars.value(v) {
                        out.push_str(&value);
                    }
                }
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The values of the template variables for one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaVars {
    /// Deployment name.
    pub deployment: String,
    /// Service name.
    pub service: String,
    /// Replica index.
    pub replica: u32,
    /// Endpoint name (upper-cased, `-` as `_`) → port for this replica, in spec order.
    pub ports: Vec<(String, u16)>,
}

impl ReplicaVars {
    /// Variables for replica `replica` of `service` in `deployment`.
    pub fn new(
        deployment: &crate::model::Deployment,
        service: &crate::model::Service,
        replica: u32,
    ) -> ReplicaVars {
        let ports = service
            .endpoints
            .iter()
            .map(|e| {
                let port = u32::from(e.port).saturating_add(replica).min(65535) as u16;
                (endpoint_var_name(&e.name), port)
            })
            .collect();
        ReplicaVars {
            deployment: deployment.name.clone(),
            service: service.name.clone(),
            replica,
            ports,
        }
    }

    /// The value of one variable, `None` for a named port the service does not have or
    /// `${PORT}` on a service without endpoints.
    pub fn value(&self, var: &TemplateVar) -> Option<String> {
        match var {
            TemplateVar::Replica => Some(self.replica.to_string()),
            TemplateVar::Port => self.ports.first().map(|(_, p)| p.to_string()),
            TemplateVar::PortNamed(n) => self
                .ports
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, p)| p.to_string()),
            TemplateVar::Service => Some(self.service.clone()),
            TemplateVar::Deployment => Some(self.deployment.clone()),
        }
    }

    /// All variables as `(NAME, value)` pairs, e.g. to export them to a process's env.
    pub fn as_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("REPLICA".to_string(), self.replica.to_string());
        env.insert("SERVICE".to_string(), self.service.clone());
        env.insert("DEPLOYMENT".to_string(), self.deployment.clone());
        if let Some((_, p)) = self.ports.first() {
            env.insert("PORT".to_string(), p.to_string());
        }
        for (name, p) in &self.ports {
            env.insert(format!("PORT_{name}"), p.to_string());
        }
        env
    }
}

/// How an endpoint name appears in `${PORT_<NAME>}`: upper-cased, `-` as `_`.
pub fn endpoint_var_name(endpoint: &str) -> String {
    endpoint.to_ascii_uppercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> ReplicaVars {
        ReplicaVars {
            deployment: "shop".into(),
            service: "api".into(),
            replica: 2,
            ports: vec![("HTTP".into(), 8082), ("ADMIN_UI".into(), 9002)],
        }
    }

    #[test]
    fn every_variable_expands_to_its_replica_value() {
        let t = Template::parse("${DEPLOYMENT}/${SERVICE}#${REPLICA}:${PORT},${PORT_ADMIN_UI}")
            .expect("valid template");
        assert_eq!(t.expand(&vars()), "shop/api#2:8082,9002");
    }

    #[test]
    fn shell_dollars_pass_through_and_double_dollar_brace_escapes() {
        let t = Template::parse("kill $$; echo $HOME $? $${PORT} ${PORT}").expect("valid template");
        assert_eq!(t.expand(&vars()), "kill $$; echo $HOME $? ${PORT} 8082");
        let lit = Template::literal("echo ${X} $$");
        assert_eq!(lit.expand(&vars()), "echo ${X} $$");
        assert_eq!(
            Template::parse(lit.source()).expect("escaped source parses"),
            lit
        );
        assert_eq!(t.vars().count(), 1);
    }

    #[test]
    fn unknown_and_unclosed_variables_are_errors() {
        assert_eq!(
            Template::parse("${HOME}"),
            Err(TemplateError::UnknownVariable("HOME".into()))
        );
        assert_eq!(Template::parse("x${PORT"), Err(TemplateError::Unclosed));
        assert!(Template::parse("${PORT_}").is_err());
    }

    #[test]
    fn named_port_lists_its_variable() {
        let t = Template::parse("${PORT_HTTP}").expect("valid template");
        assert_eq!(
            t.vars().collect::<Vec<_>>(),
            vec![&TemplateVar::PortNamed("HTTP".into())]
        );
    }
}
