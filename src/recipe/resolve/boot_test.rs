//! `[test]`: what a boot test expects and refuses on the console.

use super::context::Cx;
use crate::plan::TestPlan;
use crate::recipe::{Spanned, TestTable};

/// `[test]`: every pattern must compile; the timeout is positive.
pub(super) fn test(cx: &mut Cx, t: &TestTable, hostname: Option<&str>) -> TestPlan {
    let mut plan = TestPlan::defaults(hostname);
    let patterns = |cx: &mut Cx, list: &[Spanned<String>], key: &str| -> Vec<String> {
        for p in list {
            if let Err(e) = regex::Regex::new(p.get_ref()) {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("invalid").trim().to_string();
                cx.error(
                    p.span(),
                    format!("[test] {key}: `{}` is not a regular expression: {first}", p.get_ref()),
                    Some("Rust regex syntax; escape `( ) [ ] { } . * + ? | \\ ^ $` with a backslash to match them literally".into()),
                );
            }
        }
        list.iter().map(|p| p.get_ref().clone()).collect()
    };
    if let Some(expect) = &t.expect {
        if expect.is_empty() {
            let d = cx
                .map
                .error_file("[test] expect is empty: a boot would pass before it starts");
            cx.diags.push(
                d.with_help("list at least one pattern, or leave expect out for the login prompt"),
            );
        }
        plan.expect = patterns(cx, expect, "expect");
    }
    plan.fail.extend(patterns(cx, &t.fail, "fail"));
    if let Some(timeout) = &t.timeout {
        match u64::try_from(*timeout.get_ref()) {
            Ok(s) if (1..=86_400).contains(&s) => plan.timeout = s,
            _ => cx.error(
                timeout.span(),
                format!("[test] timeout {} is out of range", timeout.get_ref()),
                Some("seconds, from 1 to 86400".into()),
            ),
        }
    }
    plan
}
