//! What a task needs from an agent: resources (Chronos's `cpus`, `mem`, `disk`) and
//! constraints on the agent's attributes (Chronos's `constraints`), and how an agent's offer
//! is matched against them.
//!
//! Chronos clients already send these fields, so dron reads them where Chronos keeps them (the
//! job JSON's pass-through fields) rather than in fields of its own; they are validated on
//! submission like every other field, and a job's demand is parsed once when its shard loads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::container::Container;
use crate::error::Invalid;

/// Chronos's defaults: a task that says nothing takes a tenth of a core, 128 MB and 256 MB.
pub const DEFAULT_CPUS: f64 = 0.1;
pub const DEFAULT_MEM_MB: f64 = 128.0;
pub const DEFAULT_DISK_MB: f64 = 256.0;

/// Amounts of the three resources agents offer. Memory and disk in megabytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
}

/// Float sums drift; a task fits when it is short by less than this.
const EPSILON: f64 = 1e-9;

impl Resources {
    pub fn new(cpus: f64, mem: f64, disk: f64) -> Self {
        Resources { cpus, mem, disk }
    }

    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpus <= free.cpus + EPSILON
            && self.mem <= free.mem + EPSILON
            && self.disk <= free.disk + EPSILON
    }

    pub fn add(&mut self, other: &Resources) {
        self.cpus += other.cpus;
        self.mem += other.mem;
        self.disk += other.disk;
    }

    /// Subtracts, never below zero (a task's release after its agent shrank).
    pub fn sub(&mut self, other: &Resources) {
        self.cpus = (self.cpus - other.cpus).max(0.0);
        self.mem = (self.mem - other.mem).max(0.0);
        self.disk = (self.disk - other.disk).max(0.0);
    }

    pub fn minus(&self, other: &Resources) -> Resources {
        let mut left = *self;
        left.sub(other);
        left
    }

    /// The largest share of `total` this amount takes, over the three resources: the
    /// *dominant share* of Dominant Resource Fairness.
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        let share = |used: f64, all: f64| if all > 0.0 { used / all } else { 0.0 };
        share(self.cpus, total.cpus)
            .max(share(self.mem, total.mem))
            .max(share(self.disk, total.disk))
    }

    pub fn is_zero(&self) -> bool {
        self.cpus <= EPSILON && self.mem <= EPSILON && self.disk <= EPSILON
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cpus, {} MB mem, {} MB disk",
            self.cpus, self.mem, self.disk
        )
    }
}

/// Chronos's constraint operators on agent attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// The attribute equals the value.
    Equals,
    /// The attribute matches the value as a whole-string regular expression.
    Like,
    /// The attribute does not match the value (an agent without the attribute passes).
    Unlike,
}

/// One `[attribute, OPERATOR, value]` constraint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Constraint {
    pub attribute: String,
    pub operator: Operator,
    pub value: String,
    /// The compiled `^(?:value)$` for LIKE and UNLIKE.
    #[serde(skip)]
    pattern: Option<regex::Regex>,
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Self) -> bool {
        (&self.attribute, &self.operator, &self.value)
            == (&other.attribute, &other.operator, &other.value)
    }
}

impl Constraint {
    /// Does an agent with these attributes (and this name, which the attribute `hostname`
    /// means when the agent does not set it, as in Mesos) satisfy the constraint?
    pub fn admits(&self, agent_name: &str, attributes: &BTreeMap<String, String>) -> bool {
        let actual = attributes
            .get(&self.attribute)
            .map(String::as_str)
            .or((self.attribute == "hostname").then_some(agent_name));
        match (&self.operator, actual) {
            (Operator::Equals, Some(actual)) => actual == self.value,
            (Operator::Like, Some(actual)) => self.matches(actual),
            (Operator::Unlike, Some(actual)) => !self.matches(actual),
            (Operator::Unlike, None) => true,
            (_, None) => false,
        }
    }

    fn matches(&self, actual: &str) -> bool {
        self.pattern.as_ref().is_some_and(|p| p.is_match(actual))
    }
}

/// The attribute of an agent that can run containers (its value names the engine, `podman`
/// or `docker`): agents set it themselves, and only they take jobs with a `container`.
pub const CONTAINERS_ATTRIBUTE: &str = "containers";

/// What one task of a job asks of the agent that runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskDemand {
    pub resources: Resources,
    pub constraints: Vec<Constraint>,
    /// The job's `container`: its tasks run in that image, on agents that can run containers.
    pub container: Option<Container>,
}

impl Default for TaskDemand {
    fn default() -> Self {
        TaskDemand {
            resources: Resources::new(DEFAULT_CPUS, DEFAULT_MEM_MB, DEFAULT_DISK_MB),
            constraints: Vec::new(),
            container: None,
        }
    }
}

impl TaskDemand {
    /// Reads and checks `cpus`, `mem`, `disk`, `constraints` and `container` from a job's
    /// other fields.
    pub fn from_fields(fields: &Map<String, Value>) -> Result<TaskDemand, Invalid> {
        let resources = Resources::new(
            amount(fields, "cpus", DEFAULT_CPUS)?,
            amount(fields, "mem", DEFAULT_MEM_MB)?,
            amount(fields, "disk", DEFAULT_DISK_MB)?,
        );
        let constraints = match fields.get("constraints") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().map(constraint).collect::<Result<_, _>>()?,
            Some(_) => return Err(constraint_error("constraints must be an array")),
        };
        Ok(TaskDemand {
            resources,
            constraints,
            container: Container::from_fields(fields)?,
        })
    }

    /// Reads a stored job's demand (its pass-through fields as JSON, validated on submission).
    pub fn from_json(json: &str) -> Result<TaskDemand, Invalid> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(fields)) => TaskDemand::from_fields(&fields),
            _ => Ok(TaskDemand::default()),
        }
    }

    pub fn admits(&self, agent_name: &str, attributes: &BTreeMap<String, String>) -> bool {
        self.runs_on(attributes)
            && self
                .constraints
                .iter()
                .all(|c| c.admits(agent_name, attributes))
    }

    /// Whether an agent with these attributes can run the task at all: a container needs
    /// an agent that runs containers.
    pub fn runs_on(&self, attributes: &BTreeMap<String, String>) -> bool {
        self.container.is_none() || attributes.contains_key(CONTAINERS_ATTRIBUTE)
    }
}

fn amount(fields: &Map<String, Value>, field: &'static str, default: f64) -> Result<f64, Invalid> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(Invalid::new(
                field,
                format!("{field} must be a number >= 0"),
            )),
        },
        Some(other) => Err(Invalid::new(
            field,
            format!("{field} must be a number >= 0, not {other}"),
        )),
    }
}

fn constraint_error(message: impl Into<String>) -> Invalid {
    Invalid::new("constraints", message)
}

/// Parses one `["attribute", "OPERATOR", "value"]`.
fn constraint(item: &Value) -> Result<Constraint, Invalid> {
    let parts: Option<Vec<&str>> = item
        .as_array()
        .map(|parts| parts.iter().map(Value::as_str).collect::<Option<_>>())
        .unwrap_or_default();
    let Some([attribute, operator, value]) = parts.as_deref() else {
        return Err(constraint_error(format!(
            "each constraint is [\"attribute\", \"OPERATOR\", \"value\"] (three strings), not {item}"
        )));
    };
    let operator = match *operator {
        "EQUALS" => Operator::Equals,
        "LIKE" => Operator::Like,
        "UNLIKE" => Operator::Unlike,
        other => {
            return Err(constraint_error(format!(
                "unknown constraint operator '{other}': dron supports EQUALS, LIKE and UNLIKE"
            )));
        }
    };
    let pattern = match operator {
        Operator::Equals => None,
        _ => Some(
            regex::Regex::new(&format!("^(?:{value})$"))
                .map_err(|e| constraint_error(format!("'{value}' is not a valid regex: {e}")))?,
        ),
    };
    Ok(Constraint {
        attribute: attribute.to_string(),
        operator,
        value: value.to_string(),
        pattern,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn demand(value: Value) -> Result<TaskDemand, Invalid> {
        TaskDemand::from_fields(value.as_object().unwrap())
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_chronos_defaults() {
        let d = demand(json!({})).unwrap();
        assert_eq!(d.resources, Resources::new(0.1, 128.0, 256.0));
        assert!(d.constraints.is_empty());
    }

    #[test]
    fn reads_resources_and_constraints() {
        let d = demand(json!({
            "cpus": 2, "mem": 512.5, "disk": 0,
            "constraints": [["rack", "EQUALS", "r1"], ["zone", "LIKE", "eu-.*"], ["os", "UNLIKE", "win.*"]]
        }))
        .unwrap();
        assert_eq!(d.resources, Resources::new(2.0, 512.5, 0.0));
        let good = attrs(&[("rack", "r1"), ("zone", "eu-west"), ("os", "linux")]);
        assert!(d.admits("a", &good));
        let wrong_zone = attrs(&[("rack", "r1"), ("zone", "us-east")]);
        assert!(!d.admits("a", &wrong_zone), "LIKE needs a whole match");
        let windows = attrs(&[("rack", "r1"), ("zone", "eu-west"), ("os", "windows")]);
        assert!(!d.admits("a", &windows));
        assert!(!d.admits("a", &attrs(&[])), "EQUALS needs the attribute");
    }

    #[test]
    fn hostname_means_the_agent_name() {
        let d = demand(json!({"constraints": [["hostname", "EQUALS", "worker-2"]]})).unwrap();
        assert!(d.admits("worker-2", &attrs(&[])));
        assert!(!d.admits("worker-1", &attrs(&[])));
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        let cases = [
            (json!({"cpus": -1}), "cpus"),
            (json!({"mem": "lots"}), "mem"),
            (
                json!({"constraints": [["rack", "GROUP_BY", "r1"]]}),
                "constraints",
            ),
            (json!({"constraints": [["rack", "EQUALS"]]}), "constraints"),
            (json!({"constraints": "rack"}), "constraints"),
            (
                json!({"constraints": [["rack", "LIKE", "("]]}),
                "constraints",
            ),
        ];
        for (fields, field) in cases {
            let error = demand(fields.clone()).unwrap_err();
            assert_eq!(error.field, field, "{fields}");
        }
        let error = demand(json!({"constraints": [["rack", "CLUSTER", "r1"]]})).unwrap_err();
        assert!(error.message.contains("CLUSTER"), "{}", error.message);
    }

    #[test]
    fn dominant_share_is_the_largest_share() {
        let total = Resources::new(9.0, 18.0, 0.0);
        let used = Resources::new(3.0, 12.0, 0.0);
        assert!((used.dominant_share(&total) - 2.0 / 3.0).abs() < 1e-12);
    }
}
