// Where runner tasks and EC2 instances run: a VPC tasuki creates (NAT gateway and S3 gateway endpoint
// per AZ, flow logs) or one it is given, and the runners' security group.

import { Annotations, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import type { DeployConfig } from './config';

/** The synth warning for an imported VPC not said to have an S3 gateway endpoint. */
export const NAT_TOLL_WARNING = 'tasuki:natToll';
export const NAT_TOLL_MESSAGE =
  'network.vpc.import: without an S3 gateway endpoint in this VPC, every runner image pull goes through the NAT gateway, ' +
  'which charges data processing (about $0.045/GB in us-east-1, https://aws.amazon.com/vpc/pricing/): about $0.02 per job for the ' +
  '~0.5 GB compressed official runner image. Add an S3 gateway endpoint (free) to the route tables of the runner subnets, keep the ' +
  'image in ECR in this region (ECR serves layers from S3), and set "s3_gateway_endpoint": true.';

export interface Network {
  readonly vpc: ec2.IVpc;
  /** The runner subnets: private ones of a created VPC, or the given ones (sorted by AZ). */
  readonly subnets: ec2.ISubnet[];
  readonly runnerSecurityGroup: ec2.SecurityGroup;
}

export function network(stack: Stack, config: DeployConfig, retention: logs.RetentionDays): Network {
  const { vpc, subnets } = vpcAndSubnets(stack, config, retention);
  const runnerSecurityGroup = new ec2.SecurityGroup(stack, 'RunnerSecurityGroup', {
    vpc,
    description: 'tasuki runner tasks: no inbound; outbound to GitHub, registries and whatever jobs fetch',
    allowAllOutbound: true,
  });
  return { vpc, subnets, runnerSecurityGroup };
}

function vpcAndSubnets(stack: Stack, config: DeployConfig, retention: logs.RetentionDays): { vpc: ec2.IVpc; subnets: ec2.ISubnet[] } {
  const choice = config.network.vpc;
  if ('create' in choice) {
    // An environment-agnostic stack sees two AZs (`Fn::GetAZs` picked by index), so above two the
    // zones must be named; validateDeployConfig refuses max_azs > 2 without them. CDK takes
    // `availabilityZones` or `maxAzs`, not both.
    const zones = choice.create.availability_zones ?? [];
    const azCount = zones.length > 0 ? zones.length : choice.create.max_azs;
    if (zones.length === 0 && azCount > 2) {
      throw new Error(`network.vpc.create.max_azs ${azCount} needs network.vpc.create.availability_zones (an environment-agnostic stack sees only 2 zones)`);
    }
    const vpc = new ec2.Vpc(stack, 'Vpc', {
      ...(zones.length > 0 ? { availabilityZones: zones } : { maxAzs: azCount }),
      // A NAT gateway per AZ: a candidate in another AZ is the fallback when one AZ has no capacity
      // or fails, so each AZ keeps its own way out.
      natGateways: azCount,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'runners', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 20 },
      ],
      // No NAT toll per job: ECR serves image layers from S3, so with an S3 gateway endpoint (free)
      // a pull from ECR in this region pays NAT data processing only for the small manifest and
      // token calls (https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html,
      // "Create the Amazon S3 gateway endpoint"). ECR's own interface endpoints (ecr.api, ecr.dkr)
      // are left out on purpose: they are billed per AZ-hour (about $0.01 each, so ~$29/month for
      // two endpoints in two AZs, https://aws.amazon.com/privatelink/pricing/) to save the NAT
      // processing of a few KB of API calls per pull — the gigabytes come from S3.
      gatewayEndpoints: {
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3, subnets: [{ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }] },
      },
    });
    const flowLogs = new logs.LogGroup(stack, 'VpcFlowLogs', {
      retention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    vpc.addFlowLog('FlowLog', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
      trafficType: ec2.FlowLogTrafficType.REJECT,
    });
    return { vpc, subnets: vpc.privateSubnets };
  }
  const entries = Object.entries(choice.import.subnets).sort(([a], [b]) => a.localeCompare(b));
  const vpc = ec2.Vpc.fromVpcAttributes(stack, 'Vpc', {
    vpcId: choice.import.vpc_id,
    availabilityZones: entries.map(([az]) => az),
    privateSubnetIds: entries.map(([, id]) => id),
  });
  const subnets = entries.map(([az, subnetId], i) =>
    ec2.Subnet.fromSubnetAttributes(stack, `Subnet${i}`, { subnetId, availabilityZone: az }),
  );
  Validations.of(stack).acknowledge({
    id: 'annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId',
    reason: "Imported subnets: tasuki never reads their route tables (it only launches tasks and instances in them).",
  });
  if (!choice.import.s3_gateway_endpoint) {
    Annotations.of(stack).addWarningV2(NAT_TOLL_WARNING, NAT_TOLL_MESSAGE);
  }
  return { vpc, subnets };
}
