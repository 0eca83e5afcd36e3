//! Chronos's job search (`GET /scheduler/jobs/search`): case-insensitive substring filters on
//! a job's name, command, and for `any` its owner and description too.

use dron_model::job::JobSpec;

/// Chronos's page size when the client gives none.
pub const DEFAULT_LIMIT: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSearch {
    pub name: Option<String>,
    pub command: Option<String>,
    pub any: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for JobSearch {
    fn default() -> Self {
        JobSearch {
            name: None,
            command: None,
            any: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl JobSearch {
    /// Every given filter must match; an empty filter is no filter. (Chronos's `any` only
    /// rescued jobs the other filters refused, so `?any=x` alone matched every job; dron
    /// treats it as a filter like the others.)
    pub fn matches(&self, spec: &JobSpec) -> bool {
        let name = || [spec.name.as_str()].into_iter();
        let command = || [spec.command.as_str()].into_iter();
        let described = description_fields(spec);
        let any = || {
            name()
                .chain(command())
                .chain([spec.owner.as_str()])
                .chain(described.iter().map(String::as_str))
        };
        contains(&self.name, name())
            && contains(&self.command, command())
            && contains(&self.any, any())
    }
}

/// Whether one of `fields` contains `needle`, ignoring case; true when there is no needle.
fn contains<'a>(needle: &Option<String>, mut fields: impl Iterator<Item = &'a str>) -> bool {
    let Some(needle) = needle.as_deref().filter(|n| !n.is_empty()) else {
        return true;
    };
    let needle = needle.to_lowercase();
    fields.any(|field| field.to_lowercase().contains(&needle))
}

/// `description` and `ownerName`: Chronos fields dron keeps without acting on them.
fn description_fields(spec: &JobSpec) -> Vec<String> {
    let Ok(serde_json::Value::Object(extra)) = serde_json::from_str(&spec.extra_json) else {
        return Vec::new();
    };
    ["description", "ownerName"]
        .iter()
        .filter_map(|key| extra.get(*key)?.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dron_model::job::{JobKind, JobRequest};

    fn spec(json: serde_json::Value) -> JobSpec {
        let request: JobRequest = serde_json::from_value(json).unwrap();
        request
            .validate(JobKind::Scheduled, chrono::Utc::now())
            .unwrap()
    }

    fn search(name: Option<&str>, command: Option<&str>, any: Option<&str>) -> JobSearch {
        JobSearch {
            name: name.map(str::to_string),
            command: command.map(str::to_string),
            any: any.map(str::to_string),
            ..JobSearch::default()
        }
    }

    #[test]
    fn filters_are_case_insensitive_substrings_and_all_must_match() {
        let job = spec(serde_json::json!({
            "name": "Nightly-ETL", "command": "python etl.py", "schedule": "R//PT1H",
            "owner": "data@example.com", "description": "Loads the Warehouse"
        }));
        assert!(search(None, None, None).matches(&job));
        assert!(search(Some("etl"), None, None).matches(&job));
        assert!(search(Some(""), Some("PYTHON"), None).matches(&job));
        assert!(!search(Some("etl"), Some("ruby"), None).matches(&job));
        for any in ["nightly", "etl.py", "DATA@", "warehouse"] {
            assert!(search(None, None, Some(any)).matches(&job), "{any}");
        }
        assert!(!search(None, None, Some("nothing")).matches(&job));
        assert!(!search(Some("nightly"), None, Some("nothing")).matches(&job));
    }
}
