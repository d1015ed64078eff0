//! `mesh profile --template`'s annotated example profile, as `linkerd profile
//! --template` prints one, with mesh's differences said where they apply (a one-bound
//! status range, `maxRetries`, no silently dropped route). One writer: the CLI prints
//! it, and the controller serves it to the dashboard (`/api/profile-template`), so both
//! give the same bytes.
//!
//! What is not commented out is a valid profile as it stands (a test holds it to that),
//! so a user can apply it and change one thing at a time.

const TEMPLATE: &str = r#"# ServiceProfile for __SERVICE__.__NAMESPACE__: edit the routes to match the service's API,
# then check it with `mesh profile validate FILE` and apply it with `kubectl apply -f FILE`.
apiVersion: mesh.rs/v1alpha1
kind: ServiceProfile
metadata:
  # A profile is found by its name, which must be the service's DNS name.
  name: __FQDN__
  # The service's namespace; a profile in a client's namespace applies to that
  # client's requests only.
  namespace: __NAMESPACE__
spec:
  # Routes group requests for metrics (the `rt_route` label), retries and timeouts.
  # They are tried in order and the first whose condition matches wins; requests no
  # route matches go to an implicit default route.
  routes:
  - name: GET /books/{id}

    # Which requests belong to this route. A condition sets one of:
    #   method:    an HTTP method (GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, ...)
    #   pathRegex: a regular expression for the whole path (it is anchored: `/books`
    #              does not match `/books/1`); the query string is never matched
    #   all:       a list of conditions that must all match
    #   any:       a list of conditions of which at least one must match
    #   not:       a condition that must not match
    # Several fields in one condition must all match, as if listed under `all`.
    condition:
      all:
      - method: GET
      - pathRegex: /books/[^/]*
      # Conditions nest, for example:
      # any:
      # - pathRegex: /books/[0-9]+
      # - all:
      #   - not:
      #       method: DELETE
      #   - pathRegex: /authors/.*

    # Response classes decide which responses count as failures, for the success rate
    # and for retries. They are tried in order and the first whose condition matches
    # wins; with none matching, a gRPC status decides for gRPC, else 5xx is a failure.
    responseClasses:
    - condition:
        # An inclusive range of HTTP statuses (100 to 599). With one bound only, the
        # range runs from `min` up, or up to `max` (Linkerd drops such a class).
        status:
          min: 500
          max: 599
        # Conditions combine with all, any and not here too, for example:
        # all:
        # - status: {min: 500}
        # - not:
        #     status: {min: 503, max: 503}
      isFailure: true
    - condition:
        status:
          min: 404
          max: 404
      # A 404 is an answer, not a failure of the service.
      isFailure: false

    # Retry requests that fail (by the classes above) when the retry budget allows.
    # Mark only routes that are safe to repeat, such as reads and idempotent writes.
    # Only requests whose body fits in 64 KiB are retried.
    isRetryable: true

    # At most this many retries of one request (mesh's addition to Linkerd's spec);
    # without it only the retry budget limits them, and 0 turns retries off.
    maxRetries: 2

    # Give up on a request after this long, retries included, and answer 504. A Go
    # duration: 300ms, 1.5s, 1m30s. Without it there is no timeout.
    timeout: 300ms

  - name: POST /books
    condition:
      method: POST
      pathRegex: /books
    # Not retryable (a POST may not be safe to repeat), so no isRetryable, and the
    # default classification (5xx fails).
    timeout: 2s

  # How many retries all the routes of this service may add together: `retryRatio`
  # extra requests per original one, plus `minRetriesPerSecond` so that quiet services
  # can retry too, counted over the last `ttl` (1s to 60s). Without a retryBudget these
  # defaults apply.
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s

  # A traffic split: requests for this service go to these services instead, each
  # picked in proportion to its weight (an integer, or a quantity string such as 500m
  # or "0.5"; an unquoted 0.5 is refused). Without dstOverrides every request goes to
  # the service itself.
  # dstOverrides:
  # - authority: __SERVICE__-v1.__NAMESPACE__.svc.__CLUSTER_DOMAIN__:80
  #   weight: 900m
  # - authority: __SERVICE__-v2.__NAMESPACE__.svc.__CLUSTER_DOMAIN__:80
  #   weight: 100m
"#;

/// A profile's name, the DNS name of the service it describes:
/// `<service>.<namespace>.svc.<cluster-domain>`.
pub fn service_fqdn(service: &str, namespace: &str, cluster_domain: &str) -> String {
    format!("{service}.{namespace}.svc.{cluster_domain}")
}

/// The annotated example for `service` in `namespace`, in a cluster whose domain is
/// `cluster_domain`.
pub fn template(service: &str, namespace: &str, cluster_domain: &str) -> String {
    TEMPLATE
        .replace(
            "__FQDN__",
            &service_fqdn(service, namespace, cluster_domain),
        )
        .replace("__SERVICE__", service)
        .replace("__NAMESPACE__", namespace)
        .replace("__CLUSTER_DOMAIN__", cluster_domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile;

    fn render() -> String {
        template("books", "shop", "example.org")
    }

    #[test]
    fn the_template_is_a_valid_profile() {
        let v =
            profile::parse_yaml(&render(), Some("example.org")).unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(v.routes.len(), 2);
        assert!(v.routes[0].is_retryable);
        assert_eq!(v.routes[0].max_retries, 2);
        assert_eq!(v.routes[0].timeout_ms, 300);
        assert_eq!(v.routes[0].response_classes.len(), 2);
    }

    /// The commented-out examples are valid too, once uncommented.
    #[test]
    fn the_commented_examples_are_valid() {
        let text = render();
        let block = |from: &str| -> String {
            text.lines()
                .skip_while(|l| !l.trim_start().starts_with(from))
                .take_while(|l| l.trim_start().starts_with('#'))
                .map(|l| l.replacen("# ", "", 1))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let wrap = |spec: String| {
            format!("metadata: {{name: books.shop.svc.example.org}}\nspec:\n{spec}\n")
        };
        let request = block("# any:");
        let response = block("# all:");
        let dst = block("# dstOverrides:");
        for spec in [
            format!("  routes:\n  - name: r\n    condition:\n{request}"),
            format!(
                "  routes:\n  - name: r\n    condition: {{method: GET}}\n    responseClasses:\n    - condition:\n{response}"
            ),
            dst,
        ] {
            let doc = wrap(spec);
            if let Err(p) = profile::parse_yaml(&doc, Some("example.org")) {
                panic!("{p}\n{doc}");
            }
        }
    }
}
