//! The HTTP conditions users tap by (a method, a path prefix, an authority), as the one
//! match every tap client sends: `mesh tap`, `mesh top` and the metrics API's
//! `/api/top` build their `TapByResourceRequest` here, so a filter means the same
//! whichever asks.

use super::observe_request::{
    r#match::{self as m, http::Match as HttpMatch, string_match},
    Match,
};

/// What a tap client filters requests by; `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpFilter {
    /// The method, any case (sent upper-case).
    pub method: Option<String>,
    /// A prefix of the path.
    pub path_prefix: Option<String>,
    /// The authority, exactly.
    pub authority: Option<String>,
}

impl HttpFilter {
    /// Every condition given must hold; `None` when none is given (every request).
    pub fn to_match(&self) -> Option<Match> {
        let http = |m: HttpMatch| Match {
            r#match: Some(m::Match::Http(m::Http { r#match: Some(m) })),
        };
        let mut all = Vec::new();
        if let Some(method) = &self.method {
            all.push(http(HttpMatch::Method(method.to_ascii_uppercase())));
        }
        if let Some(path) = &self.path_prefix {
            all.push(http(HttpMatch::Path(m::StringMatch {
                r#match: Some(string_match::Match::Prefix(path.clone())),
            })));
        }
        if let Some(authority) = &self.authority {
            all.push(http(HttpMatch::Authority(m::StringMatch {
                r#match: Some(string_match::Match::Exact(authority.clone())),
            })));
        }
        (!all.is_empty()).then(|| Match {
            r#match: Some(m::Match::All(m::Seq { matches: all })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_condition_given_must_hold() {
        assert_eq!(HttpFilter::default().to_match(), None, "no condition");
        let filter = HttpFilter {
            method: Some("post".into()),
            path_prefix: Some("/api".into()),
            authority: None,
        };
        let Some(Match {
            r#match: Some(m::Match::All(seq)),
        }) = filter.to_match()
        else {
            panic!("not an all-of: {:?}", filter.to_match());
        };
        let conditions: Vec<_> = seq
            .matches
            .iter()
            .map(|c| match &c.r#match {
                Some(m::Match::Http(m::Http { r#match: Some(h) })) => h.clone(),
                other => panic!("not an HTTP condition: {other:?}"),
            })
            .collect();
        assert_eq!(
            conditions,
            [
                HttpMatch::Method("POST".into()),
                HttpMatch::Path(m::StringMatch {
                    r#match: Some(string_match::Match::Prefix("/api".into())),
                }),
            ]
        );
    }
}
