//! TokenReviews and SubjectAccessReviews, created with kube-rs's client as a
//! controller creates them: tokens name the users the test said, and only what the
//! test allowed is allowed.

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::api::{Api, PostParams};
use mesh_kube_fake::FakeKube;

async fn token_review(client: &kube::Client, token: &str) -> TokenReview {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.into(),
            audiences: None,
        },
        ..Default::default()
    };
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
}

async fn access(client: &kube::Client, user: &str, namespace: &str, verb: &str) -> (bool, String) {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                verb: Some(verb.into()),
                group: Some("tap.mesh.rs".into()),
                resource: Some("tap".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let status = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    (status.allowed, status.reason.unwrap_or_default())
}

#[tokio::test]
async fn reviews_answer_as_the_test_configured() {
    let kube = FakeKube::start().await.unwrap();
    kube.add_token("t1", "alice", &["devs"]);
    kube.allow("alice", "watch", "tap.mesh.rs", "tap", Some("demo"));
    kube.allow("root", "watch", "tap.mesh.rs", "tap", None);
    let client = kube.client().unwrap();

    let status = token_review(&client, "t1").await.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.unwrap();
    assert_eq!(user.username.as_deref(), Some("alice"));
    assert_eq!(user.groups, Some(vec!["devs".to_string()]));
    let status = token_review(&client, "t2").await.status.unwrap();
    assert_eq!(status.authenticated, Some(false));

    assert!(access(&client, "alice", "demo", "watch").await.0);
    assert!(access(&client, "root", "anywhere", "watch").await.0);
    let (allowed, reason) = access(&client, "alice", "other", "watch").await;
    assert!(!allowed);
    assert!(reason.contains("no rule allows \"alice\""), "{reason}");
    assert!(!access(&client, "alice", "demo", "get").await.0);
    assert!(!access(&client, "bob", "demo", "watch").await.0);
}
