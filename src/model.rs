//! The canonical customer and its value types.
//!
//! Owns: `Email` (the identity), the `Field` names every record is described in, and
//! `Projection`, a record as a map of fields. Owns no I/O: connectors turn wire JSON
//! into projections, the engine merges and plans over them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use unicode_normalization::UnicodeNormalization;

/// A normalized, valid email address: the identity of a person across providers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid email: {0}")]
pub struct InvalidEmail(pub &'static str);

impl Email {
    /// Trims, lower-cases and puts the address in Unicode NFC, with the domain in its
    /// ASCII form by UTS 46 (`exämple.com` is `xn--exmple-cua.com`), then checks:
    /// exactly one `@`, a non-empty local part, a domain with at least one dot not at
    /// its start or end, no spaces anywhere. Two spellings of one address (NFC and
    /// NFD, Unicode and punycode domains) parse to the same `Email`.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let raw = raw.trim();
        // ASCII text is in NFC already, and lower-cases byte by byte: the usual case
        // needs neither the Unicode tables nor a second copy.
        let s: String = if raw.is_ascii() {
            raw.to_ascii_lowercase()
        } else {
            raw.to_lowercase().nfc().collect()
        };
        if s.is_empty() {
            return Err(InvalidEmail("empty"));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(InvalidEmail("contains a space"));
        }
        let mut parts = s.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(InvalidEmail("needs exactly one @"));
        };
        if local.is_empty() {
            return Err(InvalidEmail("empty local part"));
        }
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return Err(InvalidEmail("domain needs a dot inside it"));
        }
        if domain.is_ascii() {
            return Ok(Email(s));
        }
        let domain = ascii_domain(domain)?;
        Ok(Email(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }

    /// A form safe for info-level logs: first letter of the local part and the domain.
    pub fn masked(&self) -> String {
        let local = self.local_part();
        let domain = self.0.split('@').nth(1).unwrap_or_default();
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    }
}

/// The domain in its ASCII form by UTS 46 processing (the `idna` crate). An ASCII
/// domain (punycode included) is that form already and is kept as it is.
fn ascii_domain(domain: &str) -> Result<String, InvalidEmail> {
    if domain.is_ascii() {
        return Ok(domain.to_string());
    }
    let ascii = idna::domain_to_ascii(domain).map_err(|_| InvalidEmail("invalid domain"))?;
    if ascii.is_empty() || ascii.starts_with('.') || ascii.ends_with('.') || !ascii.contains('.') {
        return Err(InvalidEmail("domain needs a dot inside it"));
    }
    Ok(ascii)
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user's label of a configured provider (`[providers.NAME]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderName(pub String);

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record's id inside one provider, always kept as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemoteId(pub String);

impl fmt::Display for RemoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The store's id of a canonical customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(pub i64);

/// A field of a record. Canonical fields describe the person; `FullName` and
/// `Language` are lossy views that some providers carry instead (one `name` field, a
/// language without region). `Attr` is one key of the free `attributes` map.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Email,
    FirstName,
    LastName,
    FullName,
    Phone,
    Locale,
    Language,
    Line1,
    Line2,
    City,
    Region,
    PostalCode,
    Country,
    Note,
    AcceptsMarketing,
    Attr(String),
}

/// Every field but attributes, in the order they are listed.
const NAMED: [Field; 15] = [
    Field::Email,
    Field::FirstName,
    Field::LastName,
    Field::FullName,
    Field::Phone,
    Field::Locale,
    Field::Language,
    Field::Line1,
    Field::Line2,
    Field::City,
    Field::Region,
    Field::PostalCode,
    Field::Country,
    Field::Note,
    Field::AcceptsMarketing,
];

impl Field {
    /// True for fields of the canonical customer (not a lossy view).
    pub fn is_canonical(&self) -> bool {
        !matches!(self, Field::FullName | Field::Language)
    }

    /// Normalizes a value for comparison: emails as [`Email`] holds them (an invalid
    /// one trimmed, lower-cased and in NFC), phones by their digits (and a leading +),
    /// countries and locales case-folded. Two values are the same when their normal
    /// forms are equal.
    pub fn normalize(&self, value: &str) -> String {
        let v = value.trim();
        match self {
            Field::Email => match Email::parse(v) {
                Ok(e) => e.0,
                Err(_) => v.to_lowercase().nfc().collect(),
            },
            Field::Phone => {
                let plus = if v.starts_with('+') { "+" } else { "" };
                let digits: String = v.chars().filter(char::is_ascii_digit).collect();
                format!("{plus}{digits}")
            }
            Field::Country => v.to_uppercase(),
            Field::Locale | Field::Language => v.to_lowercase().replace('_', "-"),
            Field::AcceptsMarketing => v.to_lowercase(),
            _ => v.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }
}

impl Field {
    /// The name of a field other than an attribute (`None` for an attribute, whose
    /// name is `attributes.KEY`).
    fn fixed_name(&self) -> Option<&'static str> {
        Some(match self {
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::FullName => "full_name",
            Field::Phone => "phone",
            Field::Locale => "locale",
            Field::Language => "language",
            Field::Line1 => "address.line1",
            Field::Line2 => "address.line2",
            Field::City => "address.city",
            Field::Region => "address.region",
            Field::PostalCode => "address.postal_code",
            Field::Country => "address.country",
            Field::Note => "note",
            Field::AcceptsMarketing => "accepts_marketing",
            Field::Attr(_) => return None,
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Field::Attr(key) = self {
            return write!(f, "attributes.{key}");
        }
        f.write_str(self.fixed_name().unwrap_or("?"))
    }
}

impl FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(key) = s.strip_prefix("attributes.") {
            return Ok(Field::Attr(key.to_string()));
        }
        NAMED
            .iter()
            .find(|f| f.fixed_name() == Some(s))
            .cloned()
            .ok_or_else(|| format!("unknown field {s}"))
    }
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.fixed_name() {
            Some(name) => s.serialize_str(name),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read from the text itself where it can be (no string made per key).
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Name)
    }
}

/// A record as a map of fields to values. An empty string and a missing value are the
/// same thing, so empty values are never stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Projection(BTreeMap<Field, String>);

impl Projection {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, field: &Field) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// Sets a value; `None`, an empty or a blank string removes the field.
    pub fn set(&mut self, field: Field, value: Option<impl Into<String>>) {
        match value.map(Into::into) {
            Some(v) if !v.trim().is_empty() => {
                self.0.insert(field, v);
            }
            _ => {
                self.0.remove(&field);
            }
        }
    }

    /// Builder form of [`Projection::set`].
    pub fn with(mut self, field: Field, value: Option<impl Into<String>>) -> Self {
        self.set(field, value);
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Field, &str)> {
        self.0.iter().map(|(f, v)| (f, v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Attribute keys and values (the `attributes` map).
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|(f, v)| match f {
            Field::Attr(k) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    /// True when both hold the same normalized value for `field` (both absent counts).
    pub fn same(&self, other: &Projection, field: &Field) -> bool {
        match (self.get(field), other.get(field)) {
            (None, None) => true,
            // Equal text is the usual case, and needs no normal form.
            (Some(a), Some(b)) => a == b || field.normalize(a) == field.normalize(b),
            _ => false,
        }
    }

    /// The fields whose normalized values differ between the two projections.
    pub fn diff(&self, other: &Projection) -> Vec<Field> {
        let mut fields: Vec<&Field> = self.0.keys().chain(other.0.keys()).collect();
        fields.sort();
        fields.dedup();
        fields
            .into_iter()
            .filter(|f| !self.same(other, f))
            .cloned()
            .collect()
    }

    /// The email, when present and valid.
    pub fn email(&self) -> Option<Email> {
        self.get(&Field::Email).and_then(|e| Email::parse(e).ok())
    }
}

impl FromIterator<(Field, String)> for Projection {
    fn from_iter<I: IntoIterator<Item = (Field, String)>>(iter: I) -> Self {
        let mut p = Projection::new();
        for (f, v) in iter {
            p.set(f, Some(v));
        }
        p
    }
}

/// Which fields a provider carries, in its own projection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSet {
    pub fields: &'static [Field],
    /// The provider keeps the free `attributes` map (Sendwithus `data`, Nuvemshop `extra`).
    pub attributes: bool,
    /// Values the provider fills in by itself when a field is not given (Partial.ly's
    /// language "en"). Holding one where custsync has nothing is not a difference.
    pub defaults: &'static [(Field, &'static str)],
    /// The longest value, in characters, the provider takes in a field (Partial.ly's
    /// 2-letter `shipto_state` and `shipto_country`). A longer canonical value is
    /// never written there, and the provider's own value is then left as it is.
    pub max_chars: &'static [(Field, usize)],
}

impl FieldSet {
    /// The fields to write so that `actual` (a provider's record) matches `desired`.
    /// A desired value that does not fit the field is not one of them: it cannot be
    /// written, so it is never stale (no update every cycle).
    pub fn stale(&self, desired: &Projection, actual: &Projection) -> Vec<Field> {
        desired
            .diff(actual)
            .into_iter()
            .filter(|f| !(desired.get(f).is_none() && self.is_default(f, actual.get(f))))
            .filter(|f| self.fits(f, desired.get(f)))
            .collect()
    }

    /// True when `value` may be written to `field` (no value always fits).
    pub fn fits(&self, field: &Field, value: Option<&str>) -> bool {
        let Some(value) = value else { return true };
        self.max_chars
            .iter()
            .all(|(f, max)| f != field || value.trim().chars().count() <= *max)
    }

    /// The record without the values the provider fills in by itself: the record
    /// itself, not a copy, when the provider fills in none or it holds none of them.
    pub fn without_defaults<'p>(&self, p: &'p Projection) -> std::borrow::Cow<'p, Projection> {
        if !p.iter().any(|(f, v)| self.is_default(f, Some(v))) {
            return std::borrow::Cow::Borrowed(p);
        }
        std::borrow::Cow::Owned(
            p.iter()
                .filter(|(f, v)| !self.is_default(f, Some(v)))
                .map(|(f, v)| (f.clone(), v.to_string()))
                .collect(),
        )
    }

    /// True when `value` is what the provider fills in for `field` by itself.
    pub fn is_default(&self, field: &Field, value: Option<&str>) -> bool {
        let Some(value) = value else { return false };
        self.defaults
            .iter()
            .any(|(f, d)| f == field && field.normalize(d) == field.normalize(value))
    }

    pub fn carries(&self, field: &Field) -> bool {
        match field {
            Field::Attr(_) => self.attributes,
            f => self.fields.contains(f),
        }
    }
}

/// Joins first and last name with one space; the non-empty one alone; else `None`.
pub fn join_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [first, last]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Splits a full name on its first space: `("Mary", "Ann Smith")`.
pub fn split_name(full: &str) -> (Option<String>, Option<String>) {
    let full = full.trim();
    match full.split_once(char::is_whitespace) {
        Some((first, last)) => (Some(first.to_string()), Some(last.trim().to_string())),
        None if full.is_empty() => (None, None),
        None => (Some(full.to_string()), None),
    }
}

/// The canonical record seen through one provider's fields. Lossy views are derived
/// here so that they are computed the same way on every side: `FullName` is first and
/// last joined (or the email's local part, which providers that need a name get),
/// `Language` the primary subtag of the locale.
pub fn project(canonical: &Projection, set: &FieldSet) -> Projection {
    let mut out = Projection::new();
    for field in set.fields {
        let value = match field {
            Field::FullName => join_name(
                canonical.get(&Field::FirstName),
                canonical.get(&Field::LastName),
            )
            .or_else(|| canonical.email().map(|e| e.local_part().to_string())),
            Field::Language => canonical
                .get(&Field::Locale)
                .map(|l| primary_language(l).to_string()),
            f => canonical.get(f).map(str::to_string),
        };
        out.set(field.clone(), value);
    }
    if set.attributes {
        for (k, v) in canonical.attributes() {
            out.set(Field::Attr(k.to_string()), Some(v));
        }
    }
    out
}

fn primary_language(locale: &str) -> &str {
    locale.split(['-', '_']).next().unwrap_or(locale).trim()
}

/// Turns a provider-side value of `field` into canonical field values, using the
/// current canonical record to undo lossy views the way they were made: a full name
/// that still starts with the known first name keeps it, a language that is still the
/// locale's language keeps the locale. An email loses the spaces around it: a provider
/// may hold `" Ann@x.co "`, but none accepts it written back so.
pub fn lift(
    field: &Field,
    value: Option<&str>,
    canonical: &Projection,
) -> Vec<(Field, Option<String>)> {
    match field {
        Field::FullName => {
            let Some(full) = value.map(str::trim).filter(|v| !v.is_empty()) else {
                return vec![(Field::FirstName, None), (Field::LastName, None)];
            };
            if let Some(first) = canonical.get(&Field::FirstName) {
                let first = first.trim();
                if full == first {
                    return vec![
                        (Field::FirstName, Some(first.into())),
                        (Field::LastName, None),
                    ];
                }
                if let Some(rest) = full.strip_prefix(first).and_then(|r| r.strip_prefix(' ')) {
                    return vec![
                        (Field::FirstName, Some(first.into())),
                        (Field::LastName, Some(rest.trim().into())),
                    ];
                }
            }
            let (first, last) = split_name(full);
            vec![(Field::FirstName, first), (Field::LastName, last)]
        }
        Field::Language => {
            let keep = match (value, canonical.get(&Field::Locale)) {
                (Some(v), Some(locale)) => {
                    Field::Language.normalize(primary_language(locale))
                        == Field::Language.normalize(v)
                }
                _ => false,
            };
            if keep {
                vec![]
            } else {
                vec![(Field::Locale, value.map(str::to_string))]
            }
        }
        Field::Email => vec![(Field::Email, value.map(|v| v.trim().to_string()))],
        f => vec![(f.clone(), value.map(str::to_string))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rules() {
        assert_eq!(
            Email::parse("  John@Example.COM ").unwrap().as_str(),
            "john@example.com"
        );
        for bad in [
            "",
            "no-at",
            "a@b",
            "@x.com",
            "a@@x.com",
            "a@.x.com",
            "a@x.com.",
            "a b@x.com",
            "a@x@y.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        assert_eq!(
            Email::parse("ann@shop.co").unwrap().masked(),
            "a***@shop.co"
        );
    }

    #[test]
    fn one_address_in_two_spellings_is_one_email() {
        let nfc = "jos\u{e9}@example.com";
        let nfd = "jose\u{301}@example.com";
        assert_eq!(Email::parse(nfc), Email::parse(nfd));
        assert_eq!(Email::parse(nfd).unwrap().as_str(), nfc);
        let unicode = Email::parse("Ann@Ex\u{e4}mple.com").unwrap();
        assert_eq!(unicode.as_str(), "ann@xn--exmple-cua.com");
        assert_eq!(Email::parse("ann@xn--exmple-cua.com").unwrap(), unicode);
        // NFD in the domain too.
        assert_eq!(Email::parse("ann@exa\u{308}mple.com").unwrap(), unicode);
        assert_ne!(Email::parse("jose@example.com"), Email::parse(nfc));
        assert!(Email::parse("ann@\u{e4}.").is_err());
    }

    #[test]
    fn two_spellings_of_one_email_are_no_edit() {
        let a = Projection::new().with(Field::Email, Some("jos\u{e9}@ex\u{e4}mple.com"));
        let b = Projection::new().with(Field::Email, Some("JOSE\u{301}@xn--exmple-cua.com"));
        assert!(a.diff(&b).is_empty());
        assert_eq!(
            Field::Email.normalize("jose\u{301}@x"),
            Field::Email.normalize("jos\u{e9}@x"),
            "an invalid email is compared in NFC too"
        );
    }

    #[test]
    fn field_names_round_trip() {
        for f in NAMED.iter() {
            assert_eq!(&f.to_string().parse::<Field>().unwrap(), f);
            let text = serde_json::to_string(f).unwrap();
            assert_eq!(text, format!("\"{f}\""));
            assert_eq!(&serde_json::from_str::<Field>(&text).unwrap(), f);
        }
        let a = Field::Attr("gender".into());
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"attributes.gender\"");
        assert_eq!(
            serde_json::from_str::<Field>("\"attributes.gen\\u0064er\"").unwrap(),
            a,
            "an escaped name is read too"
        );
        assert_eq!(a.to_string(), "attributes.gender");
        assert_eq!("attributes.gender".parse::<Field>().unwrap(), a);
    }

    #[test]
    fn normalization_compares_what_matters() {
        assert_eq!(
            Field::Phone.normalize("555-555-5555"),
            Field::Phone.normalize("(555) 555 5555")
        );
        assert_ne!(
            Field::Phone.normalize("+1 555"),
            Field::Phone.normalize("1 555")
        );
        let a = Projection::new()
            .with(Field::Email, Some("A@x.com"))
            .with(Field::Note, Some(""));
        let b = Projection::new().with(Field::Email, Some("a@x.com "));
        assert!(a.diff(&b).is_empty());
    }

    #[test]
    fn a_lifted_email_is_trimmed_and_keeps_its_case() {
        let lifted = lift(
            &Field::Email,
            Some("  Ann@Example.com "),
            &Projection::new(),
        );
        assert_eq!(lifted, vec![(Field::Email, Some("Ann@Example.com".into()))]);
    }

    #[test]
    fn full_name_round_trips_through_lift() {
        let canon = Projection::new()
            .with(Field::FirstName, Some("Mary Ann"))
            .with(Field::LastName, Some("Smith"));
        let set = FieldSet {
            fields: &[Field::FullName],
            attributes: false,
            defaults: &[],
            max_chars: &[],
        };
        let p = project(&canon, &set);
        assert_eq!(p.get(&Field::FullName), Some("Mary Ann Smith"));
        let lifted = lift(&Field::FullName, Some("Mary Ann Jones"), &canon);
        assert_eq!(
            lifted,
            vec![
                (Field::FirstName, Some("Mary Ann".into())),
                (Field::LastName, Some("Jones".into()))
            ]
        );
        let lifted = lift(&Field::FullName, Some("Zé Ninguém"), &Projection::new());
        assert_eq!(lifted[0].1.as_deref(), Some("Zé"));
        assert_eq!(lifted[1].1.as_deref(), Some("Ninguém"));
    }

    #[test]
    fn full_name_falls_back_to_local_part() {
        let canon = Projection::new().with(Field::Email, Some("ann@x.com"));
        let set = FieldSet {
            fields: &[Field::FullName],
            attributes: false,
            defaults: &[],
            max_chars: &[],
        };
        assert_eq!(project(&canon, &set).get(&Field::FullName), Some("ann"));
    }

    #[test]
    fn language_keeps_the_locale_it_came_from() {
        let canon = Projection::new().with(Field::Locale, Some("de-DE"));
        assert!(lift(&Field::Language, Some("de"), &canon).is_empty());
        assert_eq!(
            lift(&Field::Language, Some("fr"), &canon),
            vec![(Field::Locale, Some("fr".into()))]
        );
    }
}
