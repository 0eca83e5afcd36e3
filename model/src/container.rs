//! A job's `container` (Chronos's field, as Chronos 2 and 3 write it): the image its command
//! runs in, with volumes, network, extra options and whether to pull the image first.
//!
//! Like `cpus` or `constraints`, the field stays with the job's pass-through fields, so it is
//! answered exactly as it was sent; it is checked on submission and parsed once when a shard
//! loads the job (into its [`crate::demand::TaskDemand`]: only agents that can run containers
//! take such a job). Agents run it with podman or docker (see `dron-shim`).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Invalid;

/// The job field, and what every error here names.
const FIELD: &str = "container";

/// A validated `container`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// A docker image reference, e.g. `python:3.12-slim` or `registry:5000/team/etl@sha256:…`.
    pub image: String,
    pub volumes: Vec<Volume>,
    pub network: Network,
    /// Pull the image before every run, even when the agent has it (Chronos's `forcePullImage`).
    pub force_pull_image: bool,
    /// Extra `--key=value` options of `podman run` / `docker run` (Chronos's `parameters`).
    pub parameters: Vec<(String, String)>,
}

/// A host directory (or, without `host_path`, a fresh anonymous volume) mounted in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub container_path: String,
    pub host_path: Option<String>,
    pub read_only: bool,
}

/// Chronos's (Mesos's) network modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    Host,
    Bridge,
    None,
}

impl Network {
    /// The value of `--network`.
    pub fn option(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::Bridge => "bridge",
            Network::None => "none",
        }
    }
}

/// Options a job may not pass through `parameters`: the shim runs the container in the
/// foreground under a name of its own and removes it, and these would undo that.
const RESERVED_PARAMETERS: [&str; 8] = [
    "name",
    "rm",
    "detach",
    "attach",
    "interactive",
    "tty",
    "restart",
    "rootfs",
];

impl Container {
    /// Reads and checks `container` from a job's other fields: None when absent or null.
    pub fn from_fields(fields: &Map<String, Value>) -> Result<Option<Container>, Invalid> {
        let container = match fields.get(FIELD) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(container)) => container,
            Some(other) => {
                return Err(invalid(format!("container must be an object, not {other}")));
            }
        };
        container_type(container.get("type"))?;
        Ok(Some(Container {
            image: image(container.get("image"))?,
            volumes: list(container, "volumes")?
                .iter()
                .enumerate()
                .map(|(i, v)| volume(i, v))
                .collect::<Result<_, _>>()?,
            network: network(container.get("network"))?,
            force_pull_image: match container.get("forcePullImage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(pull)) => *pull,
                Some(other) => {
                    return Err(invalid(format!(
                        "container.forcePullImage must be true or false, not {other}"
                    )));
                }
            },
            parameters: list(container, "parameters")?
                .iter()
                .map(parameter)
                .collect::<Result<_, _>>()?,
        }))
    }
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid::new(FIELD, message)
}

/// A string field of the container, or of one of its items.
fn text<'a>(value: Option<&'a Value>, what: &str) -> Result<Option<&'a str>, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(invalid(format!("{what} must be a string, not {other}"))),
    }
}

fn list<'a>(container: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], Invalid> {
    match container.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(invalid(format!(
            "container.{key} must be an array, not {other}"
        ))),
    }
}

/// DOCKER, or MESOS (the Mesos containerizer running a docker image): both run the image.
fn container_type(value: Option<&Value>) -> Result<(), Invalid> {
    match text(value, "container.type")? {
        None | Some("DOCKER") | Some("MESOS") => Ok(()),
        Some(other) => Err(invalid(format!(
            "container.type must be DOCKER or MESOS, not '{other}'"
        ))),
    }
}

/// The docker reference grammar (distribution/reference): `[domain[:port]/]path[:tag][@digest]`,
/// path components lower case, at most 255 characters before the tag.
static IMAGE_REFERENCE: LazyLock<regex::Regex> = LazyLock::new(|| {
    let domain_part = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
    let domain = format!("{domain_part}(?:\\.{domain_part})*(?::[0-9]+)?");
    let component = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
    let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
    let digest = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
    let pattern = format!("^(?:{domain}/)?{component}(?:/{component})*(?::{tag})?(?:@{digest})?$");
    regex::Regex::new(&pattern).expect("the image reference pattern compiles")
});

fn image(value: Option<&Value>) -> Result<String, Invalid> {
    let Some(image) = text(value, "container.image")? else {
        return Err(invalid(
            "container.image is required, e.g. \"python:3.12-slim\"",
        ));
    };
    if !IMAGE_REFERENCE.is_match(image) || repository(image).len() > 255 {
        return Err(invalid(format!(
            "container.image '{}' is not a valid image reference (e.g. \"busybox:1.36\" or \
             \"registry.example.com:5000/team/etl@sha256:...\"; lower case names)",
            crate::name::truncate(image)
        )));
    }
    Ok(image.to_string())
}

/// The image's name without its tag and digest.
fn repository(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rfind(':') {
        Some(colon) if colon > name.rfind('/').unwrap_or(0) => &name[..colon],
        _ => name,
    }
}

/// An absolute path without the characters `-v host:container:mode` cannot carry.
fn absolute_path(value: Option<&Value>, what: &str) -> Result<Option<String>, Invalid> {
    let Some(path) = text(value, what)? else {
        return Ok(None);
    };
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "{what} must be an absolute path, not '{}'",
            crate::name::truncate(path)
        )));
    }
    if path.contains([':', ',', '\n', '\0']) {
        return Err(invalid(format!(
            "{what} '{}' contains ':', ',' or a control character",
            crate::name::truncate(path)
        )));
    }
    Ok(Some(path.to_string()))
}

fn volume(index: usize, value: &Value) -> Result<Volume, Invalid> {
    let Value::Object(volume) = value else {
        return Err(invalid(format!(
            "container.volumes[{index}] must be an object \
             {{\"containerPath\", \"hostPath\", \"mode\"}}, not {value}"
        )));
    };
    let at = |key: &str| format!("container.volumes[{index}].{key}");
    let Some(container_path) = absolute_path(volume.get("containerPath"), &at("containerPath"))?
    else {
        return Err(invalid(format!("{} is required", at("containerPath"))));
    };
    let host_path = absolute_path(volume.get("hostPath"), &at("hostPath"))?;
    let read_only = match text(volume.get("mode"), &at("mode"))? {
        None | Some("RW") => false,
        Some("RO") => true,
        Some(other) => {
            return Err(invalid(format!(
                "{} must be RO or RW, not '{other}'",
                at("mode")
            )));
        }
    };
    Ok(Volume {
        container_path,
        host_path,
        read_only,
    })
}

/// HOST (Chronos's default), BRIDGE or NONE.
fn network(value: Option<&Value>) -> Result<Network, Invalid> {
    match text(value, "container.network")? {
        None | Some("HOST") => Ok(Network::Host),
        Some("BRIDGE") => Ok(Network::Bridge),
        Some("NONE") => Ok(Network::None),
        Some(other) => Err(invalid(format!(
            "container.network must be HOST, BRIDGE or NONE, not '{other}'"
        ))),
    }
}

/// One `{"key": "memory-reservation", "value": "64m"}`: becomes `--memory-reservation=64m`.
fn parameter(value: &Value) -> Result<(String, String), Invalid> {
    let key = text(value.get("key"), "container.parameters[].key")?.unwrap_or_default();
    let well_formed = key.len() >= 2
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !well_formed {
        return Err(invalid(format!(
            "container.parameters: each is {{\"key\": \"option-name\", \"value\": \"...\"}} with \
             a long option name (lower case, digits, '-'), not {value}"
        )));
    }
    if RESERVED_PARAMETERS.contains(&key) {
        return Err(invalid(format!(
            "container.parameters: '{key}' is set by dron (the container runs in the \
             foreground under its task's name and is removed when it ends)"
        )));
    }
    let value = text(value.get("value"), "container.parameters[].value")?.unwrap_or_default();
    if value.contains(['\n', '\0']) {
        return Err(invalid(format!(
            "container.parameters: the value of '{key}' contains a control character"
        )));
    }
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(container: Value) -> Result<Option<Container>, Invalid> {
        Container::from_fields(json!({ "container": container }).as_object().unwrap())
    }

    #[test]
    fn a_chronos_container_is_read() {
        let container = parse(json!({
            "type": "DOCKER", "image": "registry.example.com:5000/team/etl:2.1",
            "network": "BRIDGE", "networkInfos": [], "forcePullImage": true,
            "volumes": [
                {"containerPath": "/data", "hostPath": "/srv/data", "mode": "RO"},
                {"containerPath": "/scratch", "mode": "RW"}
            ],
            "parameters": [{"key": "memory-reservation", "value": "64m"}]
        }))
        .unwrap()
        .unwrap();
        assert_eq!(container.image, "registry.example.com:5000/team/etl:2.1");
        assert_eq!(container.network, Network::Bridge);
        assert!(container.force_pull_image);
        assert_eq!(
            container.volumes,
            [
                Volume {
                    container_path: "/data".into(),
                    host_path: Some("/srv/data".into()),
                    read_only: true
                },
                Volume {
                    container_path: "/scratch".into(),
                    host_path: None,
                    read_only: false
                }
            ]
        );
        assert_eq!(
            container.parameters,
            [("memory-reservation".into(), "64m".into())]
        );
        let minimal = parse(json!({"type": "MESOS", "image": "busybox"})).unwrap();
        let minimal = minimal.unwrap();
        assert_eq!(minimal.network, Network::Host, "Chronos's default");
        assert!(!minimal.force_pull_image && minimal.volumes.is_empty());
        assert_eq!(parse(Value::Null).unwrap(), None);
    }

    #[test]
    fn image_references_follow_the_docker_grammar() {
        for good in [
            "busybox",
            "busybox:1.36",
            "library/python:3.12-slim",
            "localhost/dron-test-busybox",
            "localhost:5000/a/b__c/d-e.f:v1.0_x",
            "Registry.Example.com/team/etl@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse(json!({"image": good})).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-tag",
            "a//b",
            "/busybox",
            "busybox@sha256:12",
            "bus box",
            "busybox;rm -rf /",
        ] {
            let error = parse(json!({"image": bad})).unwrap_err();
            assert_eq!(error.field, "container", "{bad}");
            assert!(error.message.contains("container.image"), "{bad}: {error}");
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (json!({"type": "LXC", "image": "busybox"}), "container.type"),
            (json!({"type": "DOCKER"}), "container.image"),
            (json!({"image": 3}), "container.image"),
            (
                json!({"image": "busybox", "volumes": [{"containerPath": "data", "hostPath": "/srv"}]}),
                "container.volumes[0].containerPath",
            ),
            (
                json!({"image": "busybox", "volumes": [{"containerPath": "/d", "hostPath": "srv/data"}]}),
                "container.volumes[0].hostPath",
            ),
            (
                json!({"image": "busybox", "volumes": [{"containerPath": "/d", "hostPath": "/a:b"}]}),
                "container.volumes[0].hostPath",
            ),
            (
                json!({"image": "busybox", "volumes": [{"containerPath": "/d", "mode": "rw-ish"}]}),
                "container.volumes[0].mode",
            ),
            (
                json!({"image": "busybox", "volumes": ["/d"]}),
                "container.volumes[0]",
            ),
            (
                json!({"image": "busybox", "network": "USER"}),
                "container.network",
            ),
            (
                json!({"image": "busybox", "forcePullImage": "yes"}),
                "container.forcePullImage",
            ),
            (
                json!({"image": "busybox", "parameters": [{"key": "name", "value": "x"}]}),
                "'name'",
            ),
            (
                json!({"image": "busybox", "parameters": [{"key": "-v", "value": "x"}]}),
                "container.parameters",
            ),
            (json!("busybox"), "container must be an object"),
        ];
        for (container, names) in cases {
            let error = parse(container.clone()).unwrap_err();
            assert_eq!(error.field, "container", "{container}");
            assert!(
                error.message.contains(names),
                "{container}: {}",
                error.message
            );
        }
    }
}
