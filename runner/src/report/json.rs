//! The JSON rendering: the whole report, for programs (docs/report.md).

use super::model::Report;

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
