// EC2 Spot capacity for `docker` jobs (privileged dind runs only here: Fargate cannot run privileged):
// per arch, an Auto Scaling group and its capacity provider, and the docker task definition.

import { Stack, Validations } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Arch, DeployConfig } from './config';
import { dindTaskDefinition } from './docker-task';
import { pascal } from './lambdas';
import type { Network } from './network';
import { type Runners, clusterScopedArn, nagClusterScopedArn } from './runners';

export interface Ec2Runners {
  readonly capacityProviders: Partial<Record<Arch, ecs.AsgCapacityProvider>>;
  /** By `<arch>_docker`: the docker task definitions. */
  readonly taskDefinitions: Record<string, ecs.TaskDefinition>;
}

/** Capacity and a docker task definition for each arch that has instance types. */
export function ec2Runners(stack: Stack, ec2Config: NonNullable<DeployConfig['ec2']>, network: Network, runners: Runners): Ec2Runners {
  const capacityProviders: Partial<Record<Arch, ecs.AsgCapacityProvider>> = {};
  const taskDefinitions: Record<string, ecs.TaskDefinition> = {};
  const instanceSecurityGroup = new ec2.SecurityGroup(stack, 'Ec2InstanceSecurityGroup', {
    vpc: network.vpc,
    description: 'tasuki EC2 container instances: no inbound',
    allowAllOutbound: true,
  });
  for (const arch of ['x64', 'arm64'] as const) {
    const types = ec2Config.instance_types[arch];
    if (!types || types.length === 0) continue;
    capacityProviders[arch] = ec2Capacity(stack, runners.cluster, arch, types, ec2Config.max_instances, network, instanceSecurityGroup);
    taskDefinitions[`${arch}_docker`] = dindTaskDefinition(stack, arch, runners);
  }
  return { capacityProviders, taskDefinitions };
}

/**
 * An EC2 Spot Auto Scaling group and its capacity provider for one arch. The ECS agent's IAM is
 * written here rather than by `Cluster.addAsgCapacityProvider`, whose policy grants logs and
 * ECR on `*`: tasks log and pull through their execution role.
 */
function ec2Capacity(
  stack: Stack,
  cluster: ecs.Cluster,
  arch: Arch,
  instanceTypes: string[],
  maxInstances: number,
  { vpc, subnets }: Network,
  securityGroup: ec2.ISecurityGroup,
): ecs.AsgCapacityProvider {
  const id = `Ec2${pascal(arch)}`;
  const instanceRole = new iam.Role(stack, `${id}InstanceRole`, {
    assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
    description: `tasuki ${arch} ECS container instances: the ECS agent only`,
  });
  const containerInstances = clusterScopedArn(cluster, 'container-instance');
  const onCluster = { ArnEquals: { 'ecs:cluster': cluster.clusterArn } };
  instanceRole.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'AgentRegisters',
      actions: [
        'ecs:RegisterContainerInstance',
        'ecs:DeregisterContainerInstance',
        'ecs:SubmitContainerStateChange',
        'ecs:SubmitTaskStateChange',
        'ecs:SubmitAttachmentStateChanges',
      ],
      resources: [cluster.clusterArn],
    }),
  );
  instanceRole.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'AgentPolls',
      actions: ['ecs:Poll', 'ecs:StartTelemetrySession', 'ecs:PutSystemLogEvents', 'ecs:UpdateContainerInstancesState'],
      resources: [containerInstances],
      conditions: onCluster,
    }),
  );
  instanceRole.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'AgentDiscovers',
      // DiscoverPollEndpoint has no resource type: it can only be granted on "*".
      actions: ['ecs:DiscoverPollEndpoint'],
      resources: ['*'],
    }),
  );
  Validations.of(instanceRole).acknowledge(
    {
      id: `AwsSolutions-IAM5[Resource::${nagClusterScopedArn(cluster, 'container-instance')}]`,
      reason:
        'The ECS agent polls as container instances whose ids are not known in advance: scoped to this ' +
        "cluster's container instances by ARN and the ecs:cluster condition.",
    },
    {
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'ecs:DiscoverPollEndpoint (the only action on "*") supports no resource-level permission.',
    },
  );
  const userData = ec2.UserData.forLinux();
  userData.addCommands(
    // Tasks (awsvpc) cannot reach the instance metadata service, so not the instance role either.
    'echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config',
    'echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config',
    'echo ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config',
  );
  const launchTemplate = new ec2.LaunchTemplate(stack, `${id}LaunchTemplate`, {
    machineImage: ecs.EcsOptimizedImage.amazonLinux2023(arch === 'x64' ? ecs.AmiHardwareType.STANDARD : ecs.AmiHardwareType.ARM),
    // The role's policies are managed here; the immutable view stops CDK's defaults being added.
    role: instanceRole.withoutPolicyUpdates(),
    securityGroup,
    userData,
    requireImdsv2: true,
    httpPutResponseHopLimit: 1,
    blockDevices: [
      {
        deviceName: '/dev/xvda',
        volume: ec2.BlockDeviceVolume.ebs(100, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }),
      },
    ],
  });
  const asg = new autoscaling.AutoScalingGroup(stack, `${id}Instances`, {
    vpc,
    vpcSubnets: { subnets },
    minCapacity: 0,
    maxCapacity: maxInstances,
    mixedInstancesPolicy: {
      launchTemplate,
      launchTemplateOverrides: instanceTypes.map((t) => ({ instanceType: new ec2.InstanceType(t) })),
      instancesDistribution: {
        onDemandBaseCapacity: 0,
        onDemandPercentageAboveBaseCapacity: 0,
        spotAllocationStrategy: autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
      },
    },
    capacityRebalance: true,
  });
  Validations.of(asg).acknowledge(
    {
      id: 'AwsSolutions-AS3',
      reason:
        'The ECS capacity provider scales this group; job-level outcomes (a task that could not be placed, a ' +
        'Spot interruption) are recorded per job in the lifecycle table, not as ASG notifications.',
    },
    {
      // cdk-nag cannot follow the mixed instances policy to the launch template (the rule errors).
    id: 'AwsSolutions-EC26',
      reason: "The launch template's only block device is an encrypted gp3 volume (asserted by infra/test).",
    },
  );
  const provider = new ecs.AsgCapacityProvider(stack, `${id}CapacityProvider`, {
    autoScalingGroup: asg,
    enableManagedScaling: true,
    enableManagedTerminationProtection: true,
    targetCapacityPercent: 100,
    machineImageType: ecs.MachineImageType.AMAZON_LINUX_2,
  });
  cluster.addAsgCapacityProvider(provider);
  return provider;
}
