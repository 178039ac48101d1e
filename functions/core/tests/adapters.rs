//! Adapters against moto: the real SDK clients, the real wire protocol, real conditional writes.

mod contract;
mod support;

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::GrantOperation;
use base64::Engine;
use tasuki_core::adapters::dynamodb::DynamoLifecycleStore;
use tasuki_core::adapters::ecs::EcsTaskLauncher;
use tasuki_core::adapters::kms::KmsSealer;
use tasuki_core::domain::ids::{Attempt, JobId, RunnerName, StartedBy};
use tasuki_core::domain::launch::LaunchRequest;
use tasuki_core::domain::lifecycle::{Happening, JobState, Position};
use tasuki_core::domain::plan::CapacityProvider;
use tasuki_core::domain::record::Commit;
use tasuki_core::ports::{CredentialSealer, LifecycleStore, Sensitive, TaskLauncher};
use tasuki_core::runner_contract::Envelope;

async fn store() -> DynamoLifecycleStore {
    let sdk = support::sdk().await;
    let table = support::table(&sdk).await;
    DynamoLifecycleStore::new(aws_sdk_dynamodb::Client::new(&sdk), table, 90)
}

store_contract_tests!(store().await);

#[tokio::test]
async fn the_gsi_holds_only_jobs_that_are_not_finished() {
    let sdk = support::sdk().await;
    let table = support::table(&sdk).await;
    let store = DynamoLifecycleStore::new(aws_sdk_dynamodb::Client::new(&sdk), &table, 90);
    contract::create(&store, 3, 1).await;
    contract::create(&store, 4, 1).await;
    let read = store.get(JobId::new(4)).await.unwrap().unwrap();
    let refuse = Commit {
        to: Position {
            state: JobState::Refused,
            attempt: 0,
        },
        happening: Happening::Refuse {
            reason: "label `gpu`".into(),
        },
        candidate: None,
        deadline: 1,
        task_arn: None,
        runner: None,
        conclusion: None,
    };
    let refused = read.apply(&refuse, &contract::now(2));
    store.commit(&read, &refused).await.unwrap();
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
    let refused = store.get(JobId::new(4)).await.unwrap().unwrap();
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
    assert_eq!(
        item["gsi_list"].as_s().unwrap(),
        "LIST#2026-11-23",
        "a commit rewrites the item with its list partition"
    );
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(item["expires_at"].as_n().unwrap().parse::<u64>().unwrap() > epoch + 80 * 86_400);
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
        .seal(
            RunnerName::new(JobId::new(77), Attempt::FIRST),
            &Sensitive::new(config.clone()),
        )
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
    assert_eq!(
        envelope.open(JobId::new(77), data_key.as_ref()).unwrap(),
        config
    );
    assert!(envelope.open(JobId::new(78), data_key.as_ref()).is_err());
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
        capacity: CapacityProvider::Fargate,
        subnet: subnet.clone(),
        security_groups: vec![sg],
        cpu_units: 2048,
        memory_mib: 4096,
        container_name: "runner".into(),
        environment: vec![("TASUKI_JIT_CONFIG_SEALED".into(), "SEALED".into())],
        started_by: StartedBy {
            job: JobId::new(9),
            attempt: Attempt::FIRST,
        },
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
