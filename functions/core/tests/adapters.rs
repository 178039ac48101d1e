//! Adapters against moto: the real SDK clients, the real wire protocol, real conditional writes.

mod support;

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::GrantOperation;
use base64::Engine;
use tasuki_core::adapters::dynamodb::DynamoLifecycleStore;
use tasuki_core::adapters::ecs::EcsTaskLauncher;
use tasuki_core::adapters::kms::KmsSealer;
use tasuki_core::domain::job::JobRef;
use tasuki_core::domain::lifecycle::{Happening, JobState, Position};
use tasuki_core::domain::waits::{Registered, Signal, Stopped, Wait, WaitPhase};
use tasuki_core::ports::{
    Commit, CredentialSealer, LaunchRequest, LifecycleStore, Sensitive, StoreError, TaskLauncher,
};
use tasuki_core::runner_contract::Envelope;

fn job(job_id: u64) -> JobRef {
    JobRef {
        job_id,
        run_id: 99,
        run_attempt: 1,
        repository: "octo-org/app".into(),
        private: true,
        workflow: "CI".into(),
        job_name: "build".into(),
        labels: vec!["self-hosted".into(), "tasuki".into()],
        installation_id: 1,
    }
}

fn plan_commit(candidates: u32) -> Commit {
    Commit {
        to: Position {
            state: JobState::Planned,
            attempt: 0,
        },
        happening: Happening::Plan { candidates },
        candidate: None,
        deadline: 1,
        task_arn: None,
        runner: None,
        conclusion: None,
    }
}

async fn store() -> DynamoLifecycleStore {
    let sdk = support::sdk().await;
    let table = support::table(&sdk).await;
    DynamoLifecycleStore::new(aws_sdk_dynamodb::Client::new(&sdk), table, 90)
}

#[tokio::test]
async fn a_job_is_created_once_with_its_received_event() {
    let store = store().await;
    assert!(store.create(&job(1), "arn:exec").await.unwrap());
    assert!(
        !store.create(&job(1), "arn:exec").await.unwrap(),
        "a redelivery creates nothing"
    );
    let record = store.get(1).await.unwrap().unwrap();
    assert_eq!(record.position, Position::RECEIVED);
    assert_eq!(record.job, job(1));
    assert_eq!(record.execution_arn.as_deref(), Some("arn:exec"));
    let timeline = store.timeline(1).await.unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(
        (timeline[0].event.as_str(), timeline[0].state),
        ("received", JobState::Received)
    );
}

#[tokio::test]
async fn a_commit_from_a_stale_read_is_a_conflict_and_writes_nothing() {
    let store = store().await;
    store.create(&job(2), "arn").await.unwrap();
    let read = store.get(2).await.unwrap().unwrap();
    store.commit(&read, &plan_commit(3)).await.unwrap();
    let again = store.commit(&read, &plan_commit(3)).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    // A signal in between also makes an older read stale: nothing a webhook wrote is lost.
    let fresh = store.get(2).await.unwrap().unwrap();
    store.signal(2, &Signal::Cancelled).await.unwrap();
    let launch = Commit {
        to: Position {
            state: JobState::Launching,
            attempt: 1,
        },
        happening: Happening::Launch {
            attempt: 1,
            candidate: "c".into(),
        },
        ..plan_commit(3)
    };
    assert!(matches!(
        store.commit(&fresh, &launch).await,
        Err(StoreError::Conflict)
    ));
    let now = store.get(2).await.unwrap().unwrap();
    assert!(now.signals.cancelled);
    assert_eq!(now.position.state, JobState::Planned);
    let events: Vec<String> = store
        .timeline(2)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["received", "planned"]);
}

#[tokio::test]
async fn the_gsi_holds_only_jobs_that_are_not_finished() {
    let sdk = support::sdk().await;
    let table = support::table(&sdk).await;
    let store = DynamoLifecycleStore::new(aws_sdk_dynamodb::Client::new(&sdk), &table, 90);
    store.create(&job(3), "arn").await.unwrap();
    store.create(&job(4), "arn").await.unwrap();
    let read = store.get(4).await.unwrap().unwrap();
    let refuse = Commit {
        to: Position {
            state: JobState::Refused,
            attempt: 0,
        },
        happening: Happening::Refuse {
            reason: "label `gpu`".into(),
        },
        ..plan_commit(0)
    };
    store.commit(&read, &refuse).await.unwrap();
    let out = aws_sdk_dynamodb::Client::new(&sdk)
        .query()
        .table_name(&table)
        .index_name(tasuki_core::adapters::dynamodb::STATE_DEADLINE_INDEX)
        .key_condition_expression("gsi_state = :s")
        .expression_attribute_values(
            ":s",
            aws_sdk_dynamodb::types::AttributeValue::S("received".into()),
        )
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = out
        .items()
        .iter()
        .map(|i| i["pk"].as_s().unwrap().clone())
        .collect();
    assert_eq!(ids, ["JOB#3"]);
    let refused = store.get(4).await.unwrap().unwrap();
    assert_eq!(refused.reason.as_deref(), Some("label `gpu`"));
    let item = aws_sdk_dynamodb::Client::new(&sdk)
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("JOB#4".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("JOB".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!item.contains_key("gsi_state"));
    assert!(
        item["expires_at"].as_n().unwrap().parse::<u64>().unwrap()
            > tasuki_core::handlers::now_epoch() + 80 * 86_400
    );
}

#[tokio::test]
async fn whichever_of_signal_and_wait_comes_second_sees_both() {
    let store = store().await;
    store.create(&job(5), "arn").await.unwrap();
    let registered = Signal::Registered(Registered {
        runner_name: "tasuki-5-1".into(),
        runner_id: 8,
        job_id: 5,
    });
    // Signal first: the waiter's arm returns the signal.
    let after_signal = store.signal(5, &registered).await.unwrap().unwrap();
    assert!(after_signal.wait.is_none());
    let wait = Wait {
        token: "tok-1".into(),
        phase: WaitPhase::Registration,
        attempt: 1,
    };
    let armed = store.arm(5, &wait).await.unwrap();
    assert_eq!(armed.wait.as_ref(), Some(&wait));
    assert_eq!(armed.signals.registered.as_ref().unwrap().runner_id, 8);
    // Wait first: the signal's write returns the token.
    store.disarm(5, "tok-1").await.unwrap();
    assert!(store.get(5).await.unwrap().unwrap().wait.is_none());
    let wait2 = Wait {
        token: "tok-2".into(),
        phase: WaitPhase::Completion,
        attempt: 1,
    };
    store.arm(5, &wait2).await.unwrap();
    let signalled = store
        .signal(
            5,
            &Signal::Completed {
                conclusion: "success".into(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(signalled.wait, Some(wait2));
    assert_eq!(signalled.signals.conclusion.as_deref(), Some("success"));
    // Disarming with a stale token leaves the current one alone.
    store.disarm(5, "tok-1").await.unwrap();
    assert!(store.get(5).await.unwrap().unwrap().wait.is_some());
}

#[tokio::test]
async fn a_late_stop_of_an_older_attempt_does_not_hide_a_newer_one() {
    let store = store().await;
    store.create(&job(6), "arn").await.unwrap();
    let stop = |attempt| {
        Signal::Stopped(Stopped {
            attempt,
            reason: format!("stop {attempt}"),
            clean_exit: false,
        })
    };
    store.signal(6, &stop(2)).await.unwrap();
    let after = store.signal(6, &stop(1)).await.unwrap().unwrap();
    assert_eq!(after.signals.stopped.unwrap().attempt, 2);
    assert!(
        store
            .signal(404, &Signal::Cancelled)
            .await
            .unwrap()
            .is_none(),
        "unknown jobs are not created"
    );
    assert!(store.get(404).await.unwrap().is_none());
}

#[tokio::test]
async fn ls_lists_jobs_newest_first() {
    let store = store().await;
    for id in [10, 11, 12] {
        store.create(&job(id), "arn").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ids: Vec<u64> = store
        .list(2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job.job_id)
        .collect();
    assert_eq!(ids, [12, 11]);
}

/// GitHub's shape and size with a 2048-bit key: base64 of a JSON object of base64 files, ~4.2 KB.
fn real_size_jit_config() -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    let rsa = format!(
        r#"{{"d":"{}","dp":"{}","dq":"{}","exponent":"AQAB","inverseQ":"{}","modulus":"{}","p":"{}","q":"{}"}}"#,
        b64.encode(random(256)),
        b64.encode(random(128)),
        b64.encode(random(128)),
        b64.encode(random(128)),
        b64.encode(random(256)),
        b64.encode(random(128)),
        b64.encode(random(128)),
    );
    let runner = r#"{"agentId":17,"agentName":"tasuki-77-1","poolId":1,"poolName":"Default","serverUrl":"https://pipelinesghubeus7.actions.githubusercontent.com/abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH/","serverUrlV1":"https://pipelinesghubeus7.actions.githubusercontent.com/abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH/_apis/distributedtask/pools/1/agents/17","gitHubUrl":"https://github.com/octo-org/app","workFolder":"_work","ephemeral":true,"useV2Flow":true,"serverUrlV2":"https://broker.actions.githubusercontent.com/"}"#;
    let credentials = r#"{"scheme":"OAuth","data":{"clientId":"0f0e0d0c-0b0a-0908-0706-050403020100","authorizationUrl":"https://vstoken.actions.githubusercontent.com/_apis/oauth2/token/abcdef01-2345-6789-abcd-ef0123456789","requireFipsCryptography":"True"}}"#;
    b64.encode(format!(
        r#"{{".runner":"{}",".credentials":"{}",".credentials_rsaparams":"{}"}}"#,
        b64.encode(runner),
        b64.encode(credentials),
        b64.encode(rsa)
    ))
}

#[tokio::test]
async fn a_real_size_jit_config_is_sealed_for_its_job_only_and_its_grant_is_revoked() {
    let (kms, key) = support::kms_key(&support::sdk().await).await;
    let role = "arn:aws:iam::123456789012:role/tasuki-runner-task";
    let sealer = KmsSealer::new(kms.clone(), &key, role);
    let config = real_size_jit_config();
    // KMS Encrypt would refuse this: it takes at most 4 096 bytes of plaintext.
    assert!(config.len() > 4096, "{}", config.len());
    let sealed = sealer
        .seal(77, 1, &Sensitive::new(config.clone()))
        .await
        .unwrap();
    assert!(!sealed.sealed.contains(&config[..40]));
    assert!(
        sealed.sealed.len() < config.len(),
        "{}",
        sealed.sealed.len()
    );

    let envelope = Envelope::parse(&sealed.sealed).unwrap();
    let unwrap = |job: &'static str| {
        kms.decrypt()
            .ciphertext_blob(Blob::new(envelope.wrapped_key.clone()))
            .encryption_context("tasuki:job-id", job)
            .send()
    };
    let data_key = unwrap("77").await.unwrap().plaintext.unwrap();
    assert_eq!(envelope.open(77, data_key.as_ref()).unwrap(), config);
    assert!(envelope.open(78, data_key.as_ref()).is_err());
    assert!(
        unwrap("78").await.is_err(),
        "another job's context must not unwrap"
    );

    let grants = kms.list_grants().key_id(&key).send().await.unwrap();
    let grant = grants
        .grants()
        .iter()
        .find(|g| g.grant_id() == Some(sealed.grant_id.as_str()))
        .expect("the job's grant");
    assert_eq!(grant.grantee_principal(), Some(role));
    assert_eq!(grant.operations(), [GrantOperation::Decrypt]);
    assert_eq!(
        grant
            .constraints()
            .and_then(|c| c.encryption_context_equals())
            .and_then(|c| c.get("tasuki:job-id"))
            .map(String::as_str),
        Some("77")
    );
    sealer.revoke(&sealed.grant_id).await.unwrap();
    let left = kms.list_grants().key_id(&key).send().await.unwrap();
    assert!(left
        .grants()
        .iter()
        .all(|g| g.grant_id() != Some(sealed.grant_id.as_str())));
    // Revoking twice (a retried cleanup) is not an error.
    sealer.revoke(&sealed.grant_id).await.unwrap();
}

#[tokio::test]
async fn run_task_starts_a_tagged_task_with_the_credential_only_as_ciphertext_and_stop_stops_it() {
    let sdk = support::sdk().await;
    let vpc = support::xml_value(
        &support::ec2_query("Action=CreateVpc&CidrBlock=10.9.0.0/16"),
        "vpcId",
    );
    support::ec2_query(&format!(
        "Action=ModifyVpcAttribute&VpcId={vpc}&EnableDnsHostnames.Value=true"
    ));
    let subnet = support::xml_value(
        &support::ec2_query(&format!(
            "Action=CreateSubnet&VpcId={vpc}&CidrBlock=10.9.1.0/24&AvailabilityZone=us-east-1a"
        )),
        "subnetId",
    );
    let sg = support::xml_value(
        &support::ec2_query(&format!(
            "Action=CreateSecurityGroup&GroupName=runner&GroupDescription=runner&VpcId={vpc}"
        )),
        "groupId",
    );
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    ecs.create_cluster()
        .cluster_name("adapter-test")
        .send()
        .await
        .unwrap();
    ecs.register_task_definition()
        .family("runner-x64")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("1024")
        .memory("2048")
        .container_definitions(
            ContainerDefinition::builder()
                .name("runner")
                .image("runner:latest")
                .memory(2048)
                .essential(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let launcher = EcsTaskLauncher::new(ecs.clone(), "adapter-test");
    let request = LaunchRequest {
        cluster: "adapter-test".into(),
        task_definition: "runner-x64".into(),
        capacity_provider: "FARGATE".into(),
        subnet: subnet.clone(),
        security_groups: vec![sg],
        cpu_units: 2048,
        memory_mib: 4096,
        container_name: "runner".into(),
        environment: vec![("TASUKI_JIT_CONFIG_SEALED".into(), "SEALED".into())],
        started_by: "tasuki/9/1".into(),
        tags: vec![("tasuki:job-id".into(), "9".into())],
    };
    let task_arn = launcher.run(&request).await.unwrap();
    let described = ecs
        .describe_tasks()
        .cluster("adapter-test")
        .tasks(&task_arn)
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await
        .unwrap();
    let task = &described.tasks()[0];
    assert_eq!(task.started_by(), Some("tasuki/9/1"));
    let env = task.overrides().unwrap().container_overrides()[0].environment();
    assert_eq!(env[0].value(), Some("SEALED"));
    launcher.stop(&task_arn, "attempt failed").await.unwrap();
    let stopped = ecs
        .describe_tasks()
        .cluster("adapter-test")
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.tasks()[0].desired_status(), Some("STOPPED"));
    // An unknown task definition is a configuration error, not a capacity problem.
    let bad = LaunchRequest {
        task_definition: "nope".into(),
        ..request
    };
    let error = launcher.run(&bad).await.unwrap_err();
    assert_eq!(error.name(), "LaunchConfigError", "{error}");
}
