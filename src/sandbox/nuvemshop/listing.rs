//! `GET /customers`: the document's filters, numbered pages, `X-Total-Count`, a `Link`
//! header, 404 past the last page and `200 []` when nothing matches.

use std::collections::HashMap;

use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use url::form_urlencoded;

use super::{error, invalid, lock, text, Inner, Refusal, Shared, DEFAULT_PER_PAGE, MAX_PER_PAGE};
use crate::providers::dates::parse_date;

#[derive(Debug, Default)]
struct ListParams {
    filter: Filter,
    page: usize,
    per_page: usize,
    fields: Option<Vec<String>>,
}

/// What a listing's filters keep, whatever page is asked for.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Filter {
    since_id: Option<u64>,
    created: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    updated: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    q: Option<String>,
}

/// The ids a filter matched, ascending: a client paging through a listing makes the
/// emulator read every customer once, not once per page.
#[derive(Debug)]
pub(super) struct Matched {
    filter: Filter,
    ids: Vec<u64>,
}

impl Inner {
    /// Makes `matched` answer for `filter`, reading every customer unless it already does.
    fn match_listing(&mut self, filter: &Filter) {
        if !self.listing.as_ref().is_some_and(|m| &m.filter == filter) {
            let ids = self
                .customers
                .iter()
                .filter(|(id, c)| matches(**id, c, filter))
                .map(|(id, _)| *id)
                .collect();
            self.listing = Some(Matched {
                filter: filter.clone(),
                ids,
            });
        }
    }

    fn matched(&self) -> &[u64] {
        self.listing.as_ref().map_or(&[], |m| &m.ids)
    }
}

fn parse_params(q: &HashMap<String, String>) -> Result<ListParams, Refusal> {
    let mut errors = Map::new();
    let given = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut number = |k: &str, default: usize, min: usize, max: usize| match given(k) {
        None => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n < min => {
                errors.insert(
                    k.into(),
                    json!([format!("must be greater than {}", min - 1)]),
                );
                default
            }
            Ok(n) if n > max => {
                errors.insert(
                    k.into(),
                    json!([format!("must be less than or equal to {max}")]),
                );
                default
            }
            Ok(n) => n,
            Err(_) => {
                errors.insert(k.into(), json!(["is not a number"]));
                default
            }
        },
    };
    let page = number("page", 1, 1, usize::MAX);
    let per_page = number("per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE);
    let since_id = match given("since_id").map(str::parse::<u64>) {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            errors.insert("since_id".into(), json!(["is not a number"]));
            None
        }
        None => None,
    };
    let mut date = |k: &'static str| {
        let v = given(k)?;
        // A `+0000` offset sent unencoded arrives as a space.
        let d = parse_date(v).or_else(|| parse_date(&v.replace(' ', "+")));
        if d.is_none() {
            errors.insert(k.into(), json!(["is not a valid ISO 8601 date"]));
        }
        d
    };
    let created = (date("created_at_min"), date("created_at_max"));
    let updated = (date("updated_at_min"), date("updated_at_max"));
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    Ok(ListParams {
        filter: Filter {
            since_id,
            created,
            updated,
            q: given("q").map(str::to_lowercase),
        },
        page,
        per_page,
        fields: given("fields").map(field_list),
    })
}

pub(super) fn field_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

fn within(
    c: &Value,
    key: &str,
    (min, max): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
) -> bool {
    if min.is_none() && max.is_none() {
        return true;
    }
    let Some(at) = text(c, key).and_then(parse_date) else {
        return false;
    };
    min.is_none_or(|m| at >= m) && max.is_none_or(|m| at <= m)
}

fn matches(id: u64, c: &Value, p: &Filter) -> bool {
    let q_hit = |q: &String| {
        ["name", "email", "identification"]
            .iter()
            .any(|k| text(c, k).is_some_and(|v| v.to_lowercase().contains(q.as_str())))
    };
    p.since_id.is_none_or(|s| id > s)
        && within(c, "created_at", p.created)
        && within(c, "updated_at", p.updated)
        && p.q.as_ref().is_none_or(q_hit)
}

/// The record with only the requested `fields` (all of it without the parameter).
pub(super) fn select(c: &Value, fields: &Option<Vec<String>>) -> Value {
    match (fields, c) {
        (Some(keys), Value::Object(m)) => Value::Object(
            keys.iter()
                .filter_map(|k| m.get(k).map(|v| (k.clone(), v.clone())))
                .collect(),
        ),
        _ => c.clone(),
    }
}

pub(super) async fn list(
    State(shared): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let p = match parse_params(&q) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let mut inner = lock(&shared.0);
    inner.match_listing(&p.filter);
    let inner = &*inner;
    let total = inner.matched().len();
    let last = total.div_ceil(p.per_page);
    // A lying server: the records of page 1 whatever is asked, and always a next page.
    let (shown, last) = if inner.page_ignored {
        (1, p.page + 1)
    } else {
        (p.page, last)
    };
    if p.page > 1 && p.page > last {
        return error(StatusCode::NOT_FOUND, &format!("Last page is {last}")).into_response();
    }
    let page: Vec<Value> = inner
        .matched()
        .iter()
        .skip((shown - 1).saturating_mul(p.per_page))
        .take(p.per_page)
        .filter_map(|id| inner.customers.get(id))
        .map(|c| select(c, &p.fields))
        .collect();
    let mut resp = Json(page).into_response();
    let headers = resp.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(total));
    let link = link_header(&inner.base_url, raw.as_deref(), p.page, last);
    if let Some(v) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LINK, v);
    }
    resp
}

/// `Link` to the other pages, absolute, keeping the request's other parameters:
/// `next` and `last` before the last page, `first` and `prev` after the first.
fn link_header(base: &str, raw_query: Option<&str>, page: usize, last: usize) -> Option<String> {
    if last <= 1 {
        return None;
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let target = |n: usize, rel: &str| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(&pairs);
        query.append_pair("page", &n.to_string());
        format!("<{base}/customers?{}>; rel=\"{rel}\"", query.finish())
    };
    let mut links = Vec::new();
    if page < last {
        links.push(target(page + 1, "next"));
        links.push(target(last, "last"));
    }
    if page > 1 {
        links.push(target(1, "first"));
        links.push(target(page - 1, "prev"));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_the_query_and_encode_it() {
        let link = link_header(
            "http://h/v1/1",
            Some("per_page=2&page=2&updated_at_min=2013-01-03T09%3A11%3A51%2B0000&fields=id,name"),
            2,
            3,
        )
        .unwrap();
        let next = crate::providers::wire::link_next(&link).unwrap();
        assert_eq!(
            next,
            "http://h/v1/1/customers?per_page=2&updated_at_min=2013-01-03T09%3A11%3A51%2B0000&fields=id%2Cname&page=3"
        );
        assert!(link.contains("rel=\"prev\"") && link.contains("rel=\"first\""));
        assert_eq!(link_header("http://h", None, 1, 1), None);
    }
}
