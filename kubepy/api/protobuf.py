"""Decode Kubernetes protobuf request bodies into the JSON shape of the API.

Stock kubectl (its typed-client commands: ``create namespace``, ``create
configmap|secret|deployment|service|serviceaccount``, ``expose``, ...) sends
request bodies as ``application/vnd.kubernetes.protobuf``.  The server speaks
JSON, so this module turns such a body into exactly the dict the JSON API
would carry, and the rest of the server never sees protobuf.

Wire format (Kubernetes' protobuf serializer)::

    body    = b"k8s\\x00" + Unknown
    Unknown = { 1: typeMeta {1: apiVersion, 2: kind}, 2: raw (bytes),
                3: contentEncoding (string), 4: contentType (string) }

``raw`` is the object itself, a proto2 message (without TypeMeta) whose
layout is given by :data:`SCHEMA_TEXT` below: one block per message type,
``<field number> <json name> <type>`` per field, with Go-like types::

    string int32 int64 bool bytes double float   scalars
    Name                                         a message of this table
    Quantity IntOrString Time MicroTime FieldsV1 apimachinery special types
    *T                                           a Go pointer (see below)
    []T                                          a repeated field
    map[K]V                                      a proto map (entries 1=key, 2=value)
    (inline)  as json name                       fields merged into the parent
                                                 (``json:",inline"`` in Go)

The field numbers and names are facts of the wire format, taken from the
``generated.proto`` files of k8s.io/api and k8s.io/apimachinery (with
pointer-ness and ``inline`` from the Go types); the table covers everything
reachable from the kinds in :func:`roots`.

Presence rules.  Go's generated marshallers always write non-pointer fields,
even at their zero value, and write pointer fields only when non-nil.  So a
non-pointer field holding its zero value ("", 0, false, an empty message, a
zero Time/IntOrString/Quantity) is *unset* and is omitted from the result,
just as the Go API server could not tell it from an absent field either;
a pointer field present on the wire is kept even when zero or empty (that is
how ``replicas: 0`` or ``emptyDir: {}`` survive).

Conversions to JSON: IntOrString -> int or str; Quantity -> str; Time ->
RFC 3339 (seconds, UTC); MicroTime -> RFC 3339 with microseconds; bytes ->
base64 (standard, padded); FieldsV1 -> the JSON object it holds.

Anything that cannot be decoded faithfully raises :class:`ProtobufError`:
malformed or truncated input, a kind without a schema, a field number the
table does not know (unless it carries only a zero value, which is what a
newer client's new non-pointer field looks like when unused), a wire type that
does not match the schema.  Data is never dropped silently.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from kubepy import kinds

__all__ = [
    "CONTENT_TYPE",
    "roots",
    "MAGIC",
    "SCHEMA",
    "SCHEMA_TEXT",
    "Field",
    "ProtobufError",
    "decode_k8s_protobuf",
    "decode_message",
    "is_protobuf",
]

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf message this server can decode."""


# Roots of SCHEMA that are not served kinds (a served kind names its own: ``Kind.proto``).
# DeleteOptions is accepted under any apiVersion (clients send it tagged with the
# group they delete in).
_OTHER_ROOTS: dict[tuple[str, str], str] = {
    ("v1", "Binding"): "Binding",
    ("autoscaling/v1", "Scale"): "Scale",
    ("policy/v1", "Eviction"): "Eviction",
    ("policy/v1beta1", "Eviction"): "Eviction",
    ("meta.k8s.io/v1", "DeleteOptions"): "DeleteOptions",
    ("authentication.k8s.io/v1", "TokenRequest"): "TokenRequest",  # serviceaccounts/token (kinds/authentication)
}


def roots() -> dict[tuple[str, str], str]:
    """(apiVersion, kind) → root message of SCHEMA, for every kind a protobuf body may carry."""
    out = {(k.api_version, k.kind): k.proto for k in kinds.all_kinds() if k.proto}
    return out | _OTHER_ROOTS


# ---------------------------------------------------------------------------
# The schema
# ---------------------------------------------------------------------------

SCHEMA_TEXT = """

# ---- meta/v1 (k8s.io/apimachinery) -------------------------------
DeleteOptions
    1 gracePeriodSeconds               *int64
    2 preconditions                    *Preconditions
    3 orphanDependents                 *bool
    4 propagationPolicy                *string
    5 dryRun                           []string
    6 ignoreStoreReadErrorWithClusterBreakingPotential *bool
ObjectMeta
    1 name                             string
    2 generateName                     string
    3 namespace                        string
    4 selfLink                         string
    5 uid                              string
    6 resourceVersion                  string
    7 generation                       int64
    8 creationTimestamp                Time
    9 deletionTimestamp                *Time
   10 deletionGracePeriodSeconds       *int64
   11 labels                           map[string]string
   12 annotations                      map[string]string
   13 ownerReferences                  []OwnerReference
   14 finalizers                       []string
   17 managedFields                    []ManagedFieldsEntry
Preconditions
    1 uid                              *string
    2 resourceVersion                  *string
OwnerReference
    1 kind                             string
    3 name                             string
    4 uid                              string
    5 apiVersion                       string
    6 controller                       *bool
    7 blockOwnerDeletion               *bool
ManagedFieldsEntry
    1 manager                          string
    2 operation                        string
    3 apiVersion                       string
    4 time                             *Time
    6 fieldsType                       string
    7 fieldsV1                         *FieldsV1
    8 subresource                      string
Condition
    1 type                             string
    2 status                           string
    3 observedGeneration               int64
    4 lastTransitionTime               Time
    5 reason                           string
    6 message                          string
LabelSelector
    1 matchLabels                      map[string]string
    2 matchExpressions                 []LabelSelectorRequirement
LabelSelectorRequirement
    1 key                              string
    2 operator                         string
    3 values                           []string

# ---- core/v1 -----------------------------------------------------
Namespace
    1 metadata                         ObjectMeta
    2 spec                             NamespaceSpec
    3 status                           NamespaceStatus
ConfigMap
    1 metadata                         ObjectMeta
    2 data                             map[string]string
    3 binaryData                       map[string]bytes
    4 immutable                        *bool
Secret
    1 metadata                         ObjectMeta
    2 data                             map[string]bytes
    3 type                             string
    4 stringData                       map[string]string
    5 immutable                        *bool
ServiceAccount
    1 metadata                         ObjectMeta
    2 secrets                          []ObjectReference
    3 imagePullSecrets                 []LocalObjectReference
    4 automountServiceAccountToken     *bool
Service
    1 metadata                         ObjectMeta
    2 spec                             ServiceSpec
    3 status                           ServiceStatus
Endpoints
    1 metadata                         ObjectMeta
    2 subsets                          []EndpointSubset
Pod
    1 metadata                         ObjectMeta
    2 spec                             PodSpec
    3 status                           PodStatus
Node
    1 metadata                         ObjectMeta
    2 spec                             NodeSpec
    3 status                           NodeStatus
Event
    1 metadata                         ObjectMeta
    2 involvedObject                   ObjectReference
    3 reason                           string
    4 message                          string
    5 source                           EventSource
    6 firstTimestamp                   Time
    7 lastTimestamp                    Time
    8 count                            int32
    9 type                             string
   10 eventTime                        MicroTime
   11 series                           *EventSeries
   12 action                           string
   13 related                          *ObjectReference
   14 reportingComponent               string
   15 reportingInstance                string
Binding
    1 metadata                         ObjectMeta
    2 target                           ObjectReference
NamespaceSpec
    1 finalizers                       []string
NamespaceStatus
    1 phase                            string
    2 conditions                       []NamespaceCondition
ObjectReference
    1 kind                             string
    2 namespace                        string
    3 name                             string
    4 uid                              string
    5 apiVersion                       string
    6 resourceVersion                  string
    7 fieldPath                        string
LocalObjectReference
    1 name                             string
ServiceSpec
    1 ports                            []ServicePort
    2 selector                         map[string]string
    3 clusterIP                        string
    4 type                             string
    5 externalIPs                      []string
    7 sessionAffinity                  string
    8 loadBalancerIP                   string
    9 loadBalancerSourceRanges         []string
   10 externalName                     string
   11 externalTrafficPolicy            string
   12 healthCheckNodePort              int32
   13 publishNotReadyAddresses         bool
   14 sessionAffinityConfig            *SessionAffinityConfig
   17 ipFamilyPolicy                   *string
   18 clusterIPs                       []string
   19 ipFamilies                       []string
   20 allocateLoadBalancerNodePorts    *bool
   21 loadBalancerClass                *string
   22 internalTrafficPolicy            *string
   23 trafficDistribution              *string
ServiceStatus
    1 loadBalancer                     LoadBalancerStatus
    2 conditions                       []Condition
EndpointSubset
    1 addresses                        []EndpointAddress
    2 notReadyAddresses                []EndpointAddress
    3 ports                            []EndpointPort
PodSpec
    1 volumes                          []Volume
    2 containers                       []Container
    3 restartPolicy                    string
    4 terminationGracePeriodSeconds    *int64
    5 activeDeadlineSeconds            *int64
    6 dnsPolicy                        string
    7 nodeSelector                     map[string]string
    8 serviceAccountName               string
    9 serviceAccount                   string
   10 nodeName                         string
   11 hostNetwork                      bool
   12 hostPID                          bool
   13 hostIPC                          bool
   14 securityContext                  *PodSecurityContext
   15 imagePullSecrets                 []LocalObjectReference
   16 hostname                         string
   17 subdomain                        string
   18 affinity                         *Affinity
   19 schedulerName                    string
   20 initContainers                   []Container
   21 automountServiceAccountToken     *bool
   22 tolerations                      []Toleration
   23 hostAliases                      []HostAlias
   24 priorityClassName                string
   25 priority                         *int32
   26 dnsConfig                        *PodDNSConfig
   27 shareProcessNamespace            *bool
   28 readinessGates                   []PodReadinessGate
   29 runtimeClassName                 *string
   30 enableServiceLinks               *bool
   31 preemptionPolicy                 *string
   32 overhead                         map[string]Quantity
   33 topologySpreadConstraints        []TopologySpreadConstraint
   34 ephemeralContainers              []EphemeralContainer
   35 setHostnameAsFQDN                *bool
   36 os                               *PodOS
   37 hostUsers                        *bool
   38 schedulingGates                  []PodSchedulingGate
   39 resourceClaims                   []PodResourceClaim
   40 resources                        *ResourceRequirements
   41 hostnameOverride                 *string
   43 schedulingGroup                  *PodSchedulingGroup
   44 evictionResponders               []EvictionResponder
PodStatus
    1 phase                            string
    2 conditions                       []PodCondition
    3 message                          string
    4 reason                           string
    5 hostIP                           string
    6 podIP                            string
    7 startTime                        *Time
    8 containerStatuses                []ContainerStatus
    9 qosClass                         string
   10 initContainerStatuses            []ContainerStatus
   11 nominatedNodeName                string
   12 podIPs                           []PodIP
   13 ephemeralContainerStatuses       []ContainerStatus
   14 resize                           string
   15 resourceClaimStatuses            []PodResourceClaimStatus
   16 hostIPs                          []HostIP
   17 observedGeneration               int64
   18 extendedResourceClaimStatus      *PodExtendedResourceClaimStatus
   19 allocatedResources               map[string]Quantity
   20 resources                        *ResourceRequirements
   21 nodeAllocatableResourceClaimStatuses []NodeAllocatableResourceClaimStatus
   22 volumeHealth                     []PodVolumeHealth
NodeSpec
    1 podCIDR                          string
    2 externalID                       string
    3 providerID                       string
    4 unschedulable                    bool
    5 taints                           []Taint
    6 configSource                     *NodeConfigSource
    7 podCIDRs                         []string
    8 podPreemptionPolicy              *NodePodPreemptionPolicy
NodeStatus
    1 capacity                         map[string]Quantity
    2 allocatable                      map[string]Quantity
    3 phase                            string
    4 conditions                       []NodeCondition
    5 addresses                        []NodeAddress
    6 daemonEndpoints                  NodeDaemonEndpoints
    7 nodeInfo                         NodeSystemInfo
    8 images                           []ContainerImage
    9 volumesInUse                     []string
   10 volumesAttached                  []AttachedVolume
   11 config                           *NodeConfigStatus
   12 runtimeHandlers                  []NodeRuntimeHandler
   13 features                         *NodeFeatures
   14 declaredFeatures                 []string
EventSource
    1 component                        string
    2 host                             string
EventSeries
    1 count                            int32
    2 lastObservedTime                 MicroTime
NamespaceCondition
    1 type                             string
    2 status                           string
    4 lastTransitionTime               Time
    5 reason                           string
    6 message                          string
ServicePort
    1 name                             string
    2 protocol                         string
    3 port                             int32
    4 targetPort                       IntOrString
    5 nodePort                         int32
    6 appProtocol                      *string
SessionAffinityConfig
    1 clientIP                         *ClientIPConfig
LoadBalancerStatus
    1 ingress                          []LoadBalancerIngress
EndpointAddress
    1 ip                               string
    2 targetRef                        *ObjectReference
    3 hostname                         string
    4 nodeName                         *string
EndpointPort
    1 name                             string
    2 port                             int32
    3 protocol                         string
    4 appProtocol                      *string
Volume
    1 name                             string
    2 (inline)                         VolumeSource
Container
    1 name                             string
    2 image                            string
    3 command                          []string
    4 args                             []string
    5 workingDir                       string
    6 ports                            []ContainerPort
    7 env                              []EnvVar
    8 resources                        ResourceRequirements
    9 volumeMounts                     []VolumeMount
   10 livenessProbe                    *Probe
   11 readinessProbe                   *Probe
   12 lifecycle                        *Lifecycle
   13 terminationMessagePath           string
   14 imagePullPolicy                  string
   15 securityContext                  *SecurityContext
   16 stdin                            bool
   17 stdinOnce                        bool
   18 tty                              bool
   19 envFrom                          []EnvFromSource
   20 terminationMessagePolicy         string
   21 volumeDevices                    []VolumeDevice
   22 startupProbe                     *Probe
   23 resizePolicy                     []ContainerResizePolicy
   24 restartPolicy                    *string
   25 restartPolicyRules               []ContainerRestartRule
EphemeralContainer
    1 (inline)                         EphemeralContainerCommon
    2 targetContainerName              string
PodSecurityContext
    1 seLinuxOptions                   *SELinuxOptions
    2 runAsUser                        *int64
    3 runAsNonRoot                     *bool
    4 supplementalGroups               []int64
    5 fsGroup                          *int64
    6 runAsGroup                       *int64
    7 sysctls                          []Sysctl
    8 windowsOptions                   *WindowsSecurityContextOptions
    9 fsGroupChangePolicy              *string
   10 seccompProfile                   *SeccompProfile
   11 appArmorProfile                  *AppArmorProfile
   12 supplementalGroupsPolicy         *string
   13 seLinuxChangePolicy              *string
Affinity
    1 nodeAffinity                     *NodeAffinity
    2 podAffinity                      *PodAffinity
    3 podAntiAffinity                  *PodAntiAffinity
Toleration
    1 key                              string
    2 operator                         string
    3 value                            string
    4 effect                           string
    5 tolerationSeconds                *int64
HostAlias
    1 ip                               string
    2 hostnames                        []string
PodDNSConfig
    1 nameservers                      []string
    2 searches                         []string
    3 options                          []PodDNSConfigOption
PodReadinessGate
    1 conditionType                    string
TopologySpreadConstraint
    1 maxSkew                          int32
    2 topologyKey                      string
    3 whenUnsatisfiable                string
    4 labelSelector                    *LabelSelector
    5 minDomains                       *int32
    6 nodeAffinityPolicy               *string
    7 nodeTaintsPolicy                 *string
    8 matchLabelKeys                   []string
PodOS
    1 name                             string
PodSchedulingGate
    1 name                             string
PodResourceClaim
    1 name                             string
    3 resourceClaimName                *string
    4 resourceClaimTemplateName        *string
ResourceRequirements
    1 limits                           map[string]Quantity
    2 requests                         map[string]Quantity
    3 claims                           []ResourceClaim
PodSchedulingGroup
    1 podGroupName                     *string
EvictionResponder
    1 name                             string
    2 priority                         *int32
PodCondition
    1 type                             string
    2 status                           string
    3 lastProbeTime                    Time
    4 lastTransitionTime               Time
    5 reason                           string
    6 message                          string
    7 observedGeneration               int64
HostIP
    1 ip                               string
PodIP
    1 ip                               string
ContainerStatus
    1 name                             string
    2 state                            ContainerState
    3 lastState                        ContainerState
    4 ready                            bool
    5 restartCount                     int32
    6 image                            string
    7 imageID                          string
    8 containerID                      string
    9 started                          *bool
   10 allocatedResources               map[string]Quantity
   11 resources                        *ResourceRequirements
   12 volumeMounts                     []VolumeMountStatus
   13 user                             *ContainerUser
   14 allocatedResourcesStatus         []ResourceStatus
   15 stopSignal                       *string
PodResourceClaimStatus
    1 name                             string
    2 resourceClaimName                *string
PodExtendedResourceClaimStatus
    1 requestMappings                  []ContainerExtendedResourceRequest
    2 resourceClaimName                string
NodeAllocatableResourceClaimStatus
    1 resourceClaimName                string
    2 containers                       []string
    4 mapping                          []NodeAllocatableMappedResources
    5 overhead                         []NodeAllocatableOverheadResources
PodVolumeHealth
    1 name                             string
    2 healthConditions                 []VolumeHealthCondition
    3 lastTransitionTime               Time
Taint
    1 key                              string
    2 value                            string
    3 effect                           string
    4 timeAdded                        *Time
NodeConfigSource
    2 configMap                        *ConfigMapNodeConfigSource
NodePodPreemptionPolicy
    1 disableResizePreemption          []string
NodeCondition
    1 type                             string
    2 status                           string
    3 lastHeartbeatTime                Time
    4 lastTransitionTime               Time
    5 reason                           string
    6 message                          string
NodeAddress
    1 type                             string
    2 address                          string
NodeDaemonEndpoints
    1 kubeletEndpoint                  DaemonEndpoint
NodeSystemInfo
    1 machineID                        string
    2 systemUUID                       string
    3 bootID                           string
    4 kernelVersion                    string
    5 osImage                          string
    6 containerRuntimeVersion          string
    7 kubeletVersion                   string
    8 kubeProxyVersion                 string
    9 operatingSystem                  string
   10 architecture                     string
   11 swap                             *NodeSwapStatus
ContainerImage
    1 names                            []string
    2 sizeBytes                        int64
AttachedVolume
    1 name                             string
    2 devicePath                       string
NodeConfigStatus
    1 assigned                         *NodeConfigSource
    2 active                           *NodeConfigSource
    3 lastKnownGood                    *NodeConfigSource
    4 error                            string
NodeRuntimeHandler
    1 name                             string
    2 features                         *NodeRuntimeHandlerFeatures
NodeFeatures
    1 supplementalGroupsPolicy         *bool
PodTemplateSpec
    1 metadata                         ObjectMeta
    2 spec                             PodSpec
ClientIPConfig
    1 timeoutSeconds                   *int32
LoadBalancerIngress
    1 ip                               string
    2 hostname                         string
    3 ipMode                           *string
    4 ports                            []PortStatus
VolumeSource
    1 hostPath                         *HostPathVolumeSource
    2 emptyDir                         *EmptyDirVolumeSource
    3 gcePersistentDisk                *GCEPersistentDiskVolumeSource
    4 awsElasticBlockStore             *AWSElasticBlockStoreVolumeSource
    5 gitRepo                          *GitRepoVolumeSource
    6 secret                           *SecretVolumeSource
    7 nfs                              *NFSVolumeSource
    8 iscsi                            *ISCSIVolumeSource
    9 glusterfs                        *GlusterfsVolumeSource
   10 persistentVolumeClaim            *PersistentVolumeClaimVolumeSource
   11 rbd                              *RBDVolumeSource
   12 flexVolume                       *FlexVolumeSource
   13 cinder                           *CinderVolumeSource
   14 cephfs                           *CephFSVolumeSource
   15 flocker                          *FlockerVolumeSource
   16 downwardAPI                      *DownwardAPIVolumeSource
   17 fc                               *FCVolumeSource
   18 azureFile                        *AzureFileVolumeSource
   19 configMap                        *ConfigMapVolumeSource
   20 vsphereVolume                    *VsphereVirtualDiskVolumeSource
   21 quobyte                          *QuobyteVolumeSource
   22 azureDisk                        *AzureDiskVolumeSource
   23 photonPersistentDisk             *PhotonPersistentDiskVolumeSource
   24 portworxVolume                   *PortworxVolumeSource
   25 scaleIO                          *ScaleIOVolumeSource
   26 projected                        *ProjectedVolumeSource
   27 storageos                        *StorageOSVolumeSource
   28 csi                              *CSIVolumeSource
   29 ephemeral                        *EphemeralVolumeSource
   30 image                            *ImageVolumeSource
ContainerPort
    1 name                             string
    2 hostPort                         int32
    3 containerPort                    int32
    4 protocol                         string
    5 hostIP                           string
EnvFromSource
    1 prefix                           string
    2 configMapRef                     *ConfigMapEnvSource
    3 secretRef                        *SecretEnvSource
EnvVar
    1 name                             string
    2 value                            string
    3 valueFrom                        *EnvVarSource
ContainerResizePolicy
    1 resourceName                     string
    2 restartPolicy                    string
ContainerRestartRule
    1 action                           string
    2 exitCodes                        *ContainerRestartRuleOnExitCodes
VolumeMount
    1 name                             string
    2 readOnly                         bool
    3 mountPath                        string
    4 subPath                          string
    5 mountPropagation                 *string
    6 subPathExpr                      string
    7 recursiveReadOnly                *string
    8 bindMountOptions                 []string
VolumeDevice
    1 name                             string
    2 devicePath                       string
Probe
    1 (inline)                         ProbeHandler
    2 initialDelaySeconds              int32
    3 timeoutSeconds                   int32
    4 periodSeconds                    int32
    5 successThreshold                 int32
    6 failureThreshold                 int32
    7 terminationGracePeriodSeconds    *int64
Lifecycle
    1 postStart                        *LifecycleHandler
    2 preStop                          *LifecycleHandler
    3 stopSignal                       *string
SecurityContext
    1 capabilities                     *Capabilities
    2 privileged                       *bool
    3 seLinuxOptions                   *SELinuxOptions
    4 runAsUser                        *int64
    5 runAsNonRoot                     *bool
    6 readOnlyRootFilesystem           *bool
    7 allowPrivilegeEscalation         *bool
    8 runAsGroup                       *int64
    9 procMount                        *string
   10 windowsOptions                   *WindowsSecurityContextOptions
   11 seccompProfile                   *SeccompProfile
   12 appArmorProfile                  *AppArmorProfile
EphemeralContainerCommon
    1 name                             string
    2 image                            string
    3 command                          []string
    4 args                             []string
    5 workingDir                       string
    6 ports                            []ContainerPort
    7 env                              []EnvVar
    8 resources                        ResourceRequirements
    9 volumeMounts                     []VolumeMount
   10 livenessProbe                    *Probe
   11 readinessProbe                   *Probe
   12 lifecycle                        *Lifecycle
   13 terminationMessagePath           string
   14 imagePullPolicy                  string
   15 securityContext                  *SecurityContext
   16 stdin                            bool
   17 stdinOnce                        bool
   18 tty                              bool
   19 envFrom                          []EnvFromSource
   20 terminationMessagePolicy         string
   21 volumeDevices                    []VolumeDevice
   22 startupProbe                     *Probe
   23 resizePolicy                     []ContainerResizePolicy
   24 restartPolicy                    *string
   25 restartPolicyRules               []ContainerRestartRule
SELinuxOptions
    1 user                             string
    2 role                             string
    3 type                             string
    4 level                            string
WindowsSecurityContextOptions
    1 gmsaCredentialSpecName           *string
    2 gmsaCredentialSpec               *string
    3 runAsUserName                    *string
    4 hostProcess                      *bool
Sysctl
    1 name                             string
    2 value                            string
SeccompProfile
    1 type                             string
    2 localhostProfile                 *string
AppArmorProfile
    1 type                             string
    2 localhostProfile                 *string
NodeAffinity
    1 requiredDuringSchedulingIgnoredDuringExecution *NodeSelector
    2 preferredDuringSchedulingIgnoredDuringExecution []PreferredSchedulingTerm
PodAffinity
    1 requiredDuringSchedulingIgnoredDuringExecution []PodAffinityTerm
    2 preferredDuringSchedulingIgnoredDuringExecution []WeightedPodAffinityTerm
PodAntiAffinity
    1 requiredDuringSchedulingIgnoredDuringExecution []PodAffinityTerm
    2 preferredDuringSchedulingIgnoredDuringExecution []WeightedPodAffinityTerm
PodDNSConfigOption
    1 name                             string
    2 value                            *string
ResourceClaim
    1 name                             string
    2 request                          string
ContainerState
    1 waiting                          *ContainerStateWaiting
    2 running                          *ContainerStateRunning
    3 terminated                       *ContainerStateTerminated
VolumeMountStatus
    1 name                             string
    2 mountPath                        string
    3 readOnly                         bool
    4 recursiveReadOnly                *string
    5 volumeStatus                     *VolumeStatus
ContainerUser
    1 linux                            *LinuxContainerUser
ResourceStatus
    1 name                             string
    2 resources                        []ResourceHealth
ContainerExtendedResourceRequest
    1 containerName                    string
    2 resourceName                     string
    3 requestName                      string
NodeAllocatableMappedResources
    1 name                             string
    2 quantity                         *Quantity
NodeAllocatableOverheadResources
    1 name                             string
    2 perPod                           *Quantity
    3 perContainer                     *Quantity
VolumeHealthCondition
    1 status                           string
    2 reason                           string
    3 message                          string
ConfigMapNodeConfigSource
    1 namespace                        string
    2 name                             string
    3 uid                              string
    4 resourceVersion                  string
    5 kubeletConfigKey                 string
DaemonEndpoint
    1 Port                             int32
NodeSwapStatus
    1 capacity                         *int64
NodeRuntimeHandlerFeatures
    1 recursiveReadOnlyMounts          *bool
    2 userNamespaces                   *bool
PortStatus
    1 port                             int32
    2 protocol                         string
    3 error                            *string
HostPathVolumeSource
    1 path                             string
    2 type                             *string
EmptyDirVolumeSource
    1 medium                           string
    2 sizeLimit                        *Quantity
    3 mode                             *int32
GCEPersistentDiskVolumeSource
    1 pdName                           string
    2 fsType                           string
    3 partition                        int32
    4 readOnly                         bool
AWSElasticBlockStoreVolumeSource
    1 volumeID                         string
    2 fsType                           string
    3 partition                        int32
    4 readOnly                         bool
GitRepoVolumeSource
    1 repository                       string
    2 revision                         string
    3 directory                        string
SecretVolumeSource
    1 secretName                       string
    2 items                            []KeyToPath
    3 defaultMode                      *int32
    4 optional                         *bool
    5 defaultUser                      *int64
NFSVolumeSource
    1 server                           string
    2 path                             string
    3 readOnly                         bool
ISCSIVolumeSource
    1 targetPortal                     string
    2 iqn                              string
    3 lun                              int32
    4 iscsiInterface                   string
    5 fsType                           string
    6 readOnly                         bool
    7 portals                          []string
    8 chapAuthDiscovery                bool
   10 secretRef                        *LocalObjectReference
   11 chapAuthSession                  bool
   12 initiatorName                    *string
GlusterfsVolumeSource
    1 endpoints                        string
    2 path                             string
    3 readOnly                         bool
PersistentVolumeClaimVolumeSource
    1 claimName                        string
    2 readOnly                         bool
RBDVolumeSource
    1 monitors                         []string
    2 image                            string
    3 fsType                           string
    4 pool                             string
    5 user                             string
    6 keyring                          string
    7 secretRef                        *LocalObjectReference
    8 readOnly                         bool
FlexVolumeSource
    1 driver                           string
    2 fsType                           string
    3 secretRef                        *LocalObjectReference
    4 readOnly                         bool
    5 options                          map[string]string
CinderVolumeSource
    1 volumeID                         string
    2 fsType                           string
    3 readOnly                         bool
    4 secretRef                        *LocalObjectReference
CephFSVolumeSource
    1 monitors                         []string
    2 path                             string
    3 user                             string
    4 secretFile                       string
    5 secretRef                        *LocalObjectReference
    6 readOnly                         bool
FlockerVolumeSource
    1 datasetName                      string
    2 datasetUUID                      string
DownwardAPIVolumeSource
    1 items                            []DownwardAPIVolumeFile
    2 defaultMode                      *int32
    3 defaultUser                      *int64
FCVolumeSource
    1 targetWWNs                       []string
    2 lun                              *int32
    3 fsType                           string
    4 readOnly                         bool
    5 wwids                            []string
AzureFileVolumeSource
    1 secretName                       string
    2 shareName                        string
    3 readOnly                         bool
ConfigMapVolumeSource
    1 (inline)                         LocalObjectReference
    2 items                            []KeyToPath
    3 defaultMode                      *int32
    4 optional                         *bool
    5 defaultUser                      *int64
VsphereVirtualDiskVolumeSource
    1 volumePath                       string
    2 fsType                           string
    3 storagePolicyName                string
    4 storagePolicyID                  string
QuobyteVolumeSource
    1 registry                         string
    2 volume                           string
    3 readOnly                         bool
    4 user                             string
    5 group                            string
    6 tenant                           string
AzureDiskVolumeSource
    1 diskName                         string
    2 diskURI                          string
    3 cachingMode                      *string
    4 fsType                           *string
    5 readOnly                         *bool
    6 kind                             *string
PhotonPersistentDiskVolumeSource
    1 pdID                             string
    2 fsType                           string
ProjectedVolumeSource
    1 sources                          []VolumeProjection
    2 defaultMode                      *int32
    3 defaultUser                      *int64
PortworxVolumeSource
    1 volumeID                         string
    2 fsType                           string
    3 readOnly                         bool
ScaleIOVolumeSource
    1 gateway                          string
    2 system                           string
    3 secretRef                        *LocalObjectReference
    4 sslEnabled                       bool
    5 protectionDomain                 string
    6 storagePool                      string
    7 storageMode                      string
    8 volumeName                       string
    9 fsType                           string
   10 readOnly                         bool
StorageOSVolumeSource
    1 volumeName                       string
    2 volumeNamespace                  string
    3 fsType                           string
    4 readOnly                         bool
    5 secretRef                        *LocalObjectReference
CSIVolumeSource
    1 driver                           string
    2 readOnly                         *bool
    3 fsType                           *string
    4 volumeAttributes                 map[string]string
    5 nodePublishSecretRef             *LocalObjectReference
EphemeralVolumeSource
    1 volumeClaimTemplate              *PersistentVolumeClaimTemplate
ImageVolumeSource
    1 reference                        string
    2 pullPolicy                       string
ConfigMapEnvSource
    1 (inline)                         LocalObjectReference
    2 optional                         *bool
SecretEnvSource
    1 (inline)                         LocalObjectReference
    2 optional                         *bool
EnvVarSource
    1 fieldRef                         *ObjectFieldSelector
    2 resourceFieldRef                 *ResourceFieldSelector
    3 configMapKeyRef                  *ConfigMapKeySelector
    4 secretKeyRef                     *SecretKeySelector
    5 fileKeyRef                       *FileKeySelector
ContainerRestartRuleOnExitCodes
    1 operator                         string
    2 values                           []int32
ProbeHandler
    1 exec                             *ExecAction
    2 httpGet                          *HTTPGetAction
    3 tcpSocket                        *TCPSocketAction
    4 grpc                             *GRPCAction
LifecycleHandler
    1 exec                             *ExecAction
    2 httpGet                          *HTTPGetAction
    3 tcpSocket                        *TCPSocketAction
    4 sleep                            *SleepAction
Capabilities
    1 add                              []string
    2 drop                             []string
NodeSelector
    1 nodeSelectorTerms                []NodeSelectorTerm
PreferredSchedulingTerm
    1 weight                           int32
    2 preference                       NodeSelectorTerm
PodAffinityTerm
    1 labelSelector                    *LabelSelector
    2 namespaces                       []string
    3 topologyKey                      string
    4 namespaceSelector                *LabelSelector
    5 matchLabelKeys                   []string
    6 mismatchLabelKeys                []string
WeightedPodAffinityTerm
    1 weight                           int32
    2 podAffinityTerm                  PodAffinityTerm
ContainerStateWaiting
    1 reason                           string
    2 message                          string
ContainerStateRunning
    1 startedAt                        Time
ContainerStateTerminated
    1 exitCode                         int32
    2 signal                           int32
    3 reason                           string
    4 message                          string
    5 startedAt                        Time
    6 finishedAt                       Time
    7 containerID                      string
VolumeStatus
    1 image                            *ImageVolumeStatus
LinuxContainerUser
    1 uid                              int64
    2 gid                              int64
    3 supplementalGroups               []int64
ResourceHealth
    1 resourceID                       string
    2 health                           string
    6 message                          *string
KeyToPath
    1 key                              string
    2 path                             string
    3 mode                             *int32
    4 user                             *int64
DownwardAPIVolumeFile
    1 path                             string
    2 fieldRef                         *ObjectFieldSelector
    3 resourceFieldRef                 *ResourceFieldSelector
    4 mode                             *int32
    5 user                             *int64
VolumeProjection
    1 secret                           *SecretProjection
    2 downwardAPI                      *DownwardAPIProjection
    3 configMap                        *ConfigMapProjection
    4 serviceAccountToken              *ServiceAccountTokenProjection
    5 clusterTrustBundle               *ClusterTrustBundleProjection
    6 podCertificate                   *PodCertificateProjection
PersistentVolumeClaimTemplate
    1 metadata                         ObjectMeta
    2 spec                             PersistentVolumeClaimSpec
ObjectFieldSelector
    1 apiVersion                       string
    2 fieldPath                        string
ResourceFieldSelector
    1 containerName                    string
    2 resource                         string
    3 divisor                          Quantity
ConfigMapKeySelector
    1 (inline)                         LocalObjectReference
    2 key                              string
    3 optional                         *bool
SecretKeySelector
    1 (inline)                         LocalObjectReference
    2 key                              string
    3 optional                         *bool
FileKeySelector
    1 volumeName                       string
    2 path                             string
    3 key                              string
    4 optional                         *bool
ExecAction
    1 command                          []string
HTTPGetAction
    1 path                             string
    2 port                             IntOrString
    3 host                             string
    4 scheme                           string
    5 httpHeaders                      []HTTPHeader
    6 protocol                         *string
TCPSocketAction
    1 port                             IntOrString
    2 host                             string
GRPCAction
    1 port                             int32
    2 service                          *string
    3 mode                             *string
SleepAction
    1 seconds                          int64
NodeSelectorTerm
    1 matchExpressions                 []NodeSelectorRequirement
    2 matchFields                      []NodeSelectorRequirement
ImageVolumeStatus
    1 imageRef                         string
SecretProjection
    1 (inline)                         LocalObjectReference
    2 items                            []KeyToPath
    4 optional                         *bool
DownwardAPIProjection
    1 items                            []DownwardAPIVolumeFile
ConfigMapProjection
    1 (inline)                         LocalObjectReference
    2 items                            []KeyToPath
    4 optional                         *bool
ServiceAccountTokenProjection
    1 audience                         string
    2 expirationSeconds                *int64
    3 path                             string
    4 user                             *int64
ClusterTrustBundleProjection
    1 name                             *string
    2 signerName                       *string
    3 labelSelector                    *LabelSelector
    4 path                             string
    5 optional                         *bool
    6 user                             *int64
PodCertificateProjection
    1 signerName                       string
    2 keyType                          string
    3 maxExpirationSeconds             *int32
    4 credentialBundlePath             string
    5 keyPath                          string
    6 certificateChainPath             string
    7 userAnnotations                  map[string]string
    8 user                             *int64
PersistentVolumeClaim
    1 metadata                         ObjectMeta
    2 spec                             PersistentVolumeClaimSpec
    3 status                           PersistentVolumeClaimStatus
PersistentVolumeClaimStatus
    1 phase                            string
    2 accessModes                      []string
    3 capacity                         map[string]Quantity
    4 conditions                       []PersistentVolumeClaimCondition
    5 allocatedResources               map[string]Quantity
    7 allocatedResourceStatuses        map[string]string
    8 currentVolumeAttributesClassName *string
    9 modifyVolumeStatus               *ModifyVolumeStatus
PersistentVolumeClaimCondition
    1 type                             string
    2 status                           string
    3 lastProbeTime                    Time
    4 lastTransitionTime               Time
    5 reason                           string
    6 message                          string
ModifyVolumeStatus
    1 targetVolumeAttributesClassName  string
    2 status                           string
PersistentVolumeClaimSpec
    1 accessModes                      []string
    2 resources                        VolumeResourceRequirements
    3 volumeName                       string
    4 selector                         *LabelSelector
    5 storageClassName                 *string
    6 volumeMode                       *string
    7 dataSource                       *TypedLocalObjectReference
    8 dataSourceRef                    *TypedObjectReference
    9 volumeAttributesClassName        *string
HTTPHeader
    1 name                             string
    2 value                            string
NodeSelectorRequirement
    1 key                              string
    2 operator                         string
    3 values                           []string
VolumeResourceRequirements
    1 limits                           map[string]Quantity
    2 requests                         map[string]Quantity
TypedLocalObjectReference
    1 apiGroup                         *string
    2 kind                             string
    3 name                             string
TypedObjectReference
    1 apiGroup                         *string
    2 kind                             string
    3 name                             string
    4 namespace                        *string

# ---- apps/v1 -----------------------------------------------------
Deployment
    1 metadata                         ObjectMeta
    2 spec                             DeploymentSpec
    3 status                           DeploymentStatus
ReplicaSet
    1 metadata                         ObjectMeta
    2 spec                             ReplicaSetSpec
    3 status                           ReplicaSetStatus
DeploymentSpec
    1 replicas                         *int32
    2 selector                         *LabelSelector
    3 template                         PodTemplateSpec
    4 strategy                         DeploymentStrategy
    5 minReadySeconds                  int32
    6 revisionHistoryLimit             *int32
    7 paused                           bool
    9 progressDeadlineSeconds          *int32
DeploymentStatus
    1 observedGeneration               int64
    2 replicas                         int32
    3 updatedReplicas                  int32
    4 availableReplicas                int32
    5 unavailableReplicas              int32
    6 conditions                       []DeploymentCondition
    7 readyReplicas                    int32
    8 collisionCount                   *int32
    9 terminatingReplicas              *int32
ReplicaSetSpec
    1 replicas                         *int32
    2 selector                         *LabelSelector
    3 template                         PodTemplateSpec
    4 minReadySeconds                  int32
ReplicaSetStatus
    1 replicas                         int32
    2 fullyLabeledReplicas             int32
    3 observedGeneration               int64
    4 readyReplicas                    int32
    5 availableReplicas                int32
    6 conditions                       []ReplicaSetCondition
    7 terminatingReplicas              *int32
DeploymentStrategy
    1 type                             string
    2 rollingUpdate                    *RollingUpdateDeployment
DeploymentCondition
    1 type                             string
    2 status                           string
    4 reason                           string
    5 message                          string
    6 lastUpdateTime                   Time
    7 lastTransitionTime               Time
ReplicaSetCondition
    1 type                             string
    2 status                           string
    3 lastTransitionTime               Time
    4 reason                           string
    5 message                          string
RollingUpdateDeployment
    1 maxUnavailable                   *IntOrString
    2 maxSurge                         *IntOrString

# ---- coordination.k8s.io/v1 --------------------------------------
Lease
    1 metadata                         ObjectMeta
    2 spec                             LeaseSpec
LeaseSpec
    1 holderIdentity                   *string
    2 leaseDurationSeconds             *int32
    3 acquireTime                      *MicroTime
    4 renewTime                        *MicroTime
    5 leaseTransitions                 *int32
    6 strategy                         *string
    7 preferredHolder                  *string

# ---- autoscaling/v1 ----------------------------------------------
Scale
    1 metadata                         ObjectMeta
    2 spec                             ScaleSpec
    3 status                           ScaleStatus
ScaleSpec
    1 replicas                         int32
ScaleStatus
    1 replicas                         int32
    2 selector                         string

# ---- policy/v1 ---------------------------------------------------
Eviction
    1 metadata                         ObjectMeta
    2 deleteOptions                    *DeleteOptions
"""

_SCALARS = frozenset({"string", "int32", "int64", "bool", "bytes", "double", "float"})
_SPECIALS = frozenset({"Quantity", "IntOrString", "Time", "MicroTime", "FieldsV1", "RawExtension"})


class Field(NamedTuple):
    """One field of a message: ``kind`` is "scalar", "special" or "message"."""

    json: str  # json name; "" for an inline field
    type: str  # scalar / special / message name (the map *value* type for maps)
    kind: str
    repeated: bool = False
    map_key: str | None = None  # key type when this is a map
    pointer: bool = False
    inline: bool = False


def _kind_of(t: str) -> str:
    return "scalar" if t in _SCALARS else "special" if t in _SPECIALS else "message"


def _parse_schema(text: str) -> dict[str, dict[int, Field]]:
    schema: dict[str, dict[int, Field]] = {}
    current: dict[int, Field] | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            name = line.strip()
            if name in schema:
                raise ValueError(f"schema line {lineno}: duplicate message {name}")
            current = schema[name] = {}
            continue
        m = re.fullmatch(r"\s+(\d+)\s+(\(inline\)|\w+)\s+(\S+)", line)
        if m is None or current is None:
            raise ValueError(f"schema line {lineno}: cannot parse {line!r}")
        num, json_name, t = int(m.group(1)), m.group(2), m.group(3)
        if num in current:
            raise ValueError(f"schema line {lineno}: duplicate field number {num}")
        inline = json_name == "(inline)"
        mm = re.fullmatch(r"map\[(\w+)\](\w+)", t)
        if mm:
            f = Field(json_name, mm.group(2), _kind_of(mm.group(2)), map_key=mm.group(1))
        elif t.startswith("[]"):
            f = Field(json_name, t[2:], _kind_of(t[2:]), repeated=True)
        elif t.startswith("*"):
            f = Field(json_name, t[1:], _kind_of(t[1:]), pointer=True)
        else:
            f = Field("" if inline else json_name, t, _kind_of(t), inline=inline)
        current[num] = f
    for msg, fields in schema.items():  # every referenced message is defined
        for f in fields.values():
            if f.kind == "message" and f.type not in schema:
                raise ValueError(f"schema: {msg} refers to undefined message {f.type}")
            if f.inline and f.kind != "message":
                raise ValueError(f"schema: {msg} inlines non-message {f.type}")
    return schema


class _Schema(Mapping[str, dict[int, Field]]):
    """SCHEMA_TEXT plus the messages each registered kind brings (``Kind.proto_schema``),
    parsed again whenever the registry changed."""

    def __init__(self) -> None:
        self._generation = -1
        self._messages: dict[str, dict[int, Field]] = {}

    def _current(self) -> dict[str, dict[int, Field]]:
        generation = kinds.generation()
        if generation != self._generation:
            text = SCHEMA_TEXT + "".join(k.proto_schema for k in kinds.all_kinds())
            self._messages, self._generation = _parse_schema(text), generation
        return self._messages

    def __getitem__(self, name: str) -> dict[int, Field]:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


SCHEMA: Mapping[str, dict[int, Field]] = _Schema()

# ---------------------------------------------------------------------------
# Wire level
# ---------------------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint too long")


def _fields(buf: bytes, where: str) -> list[tuple[int, int, Any]]:
    """Split a message into (field number, wire type, value) in wire order;
    the value is an int for numeric wire types and bytes for LEN."""
    out: list[tuple[int, int, Any]] = []
    pos, end = 0, len(buf)
    while pos < end:
        try:
            key, pos = _varint(buf, pos, end)
        except ProtobufError as e:
            raise ProtobufError(f"{where}: {e}") from None
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ProtobufError(f"{where}: invalid field number 0")
        try:
            if wt == _VARINT:
                val, pos = _varint(buf, pos, end)
            elif wt == _LEN:
                n, pos = _varint(buf, pos, end)
                if pos + n > end:
                    raise ProtobufError("truncated length-delimited field")
                val, pos = buf[pos:pos + n], pos + n
            elif wt == _I64:
                if pos + 8 > end:
                    raise ProtobufError("truncated 64-bit field")
                val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
            elif wt == _I32:
                if pos + 4 > end:
                    raise ProtobufError("truncated 32-bit field")
                val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
            else:
                raise ProtobufError(f"unsupported wire type {wt}")
        except ProtobufError as e:
            raise ProtobufError(f"{where}: field {num}: {e}") from None
        out.append((num, wt, val))
    return out


def _int64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _packed_varints(data: bytes, where: str) -> list[int]:
    vals, pos = [], 0
    while pos < len(data):
        try:
            v, pos = _varint(data, pos, len(data))
        except ProtobufError as e:
            raise ProtobufError(f"{where}: {e}") from None
        vals.append(v)
    return vals


def _scalar(t: str, wt: int, val: Any, where: str) -> Any:
    """One wire value as a JSON value of scalar type ``t``."""
    expected = {"double": _I64, "float": _I32, "string": _LEN, "bytes": _LEN}.get(t, _VARINT)
    if wt != expected:
        raise ProtobufError(f"{where}: wire type {wt} does not fit {t}")
    if t == "string":
        try:
            return bytes(val).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtobufError(f"{where}: string is not valid UTF-8") from None
    if t == "bytes":
        return base64.b64encode(val).decode("ascii")
    if t == "int64":
        return _int64(val)
    if t == "int32":
        return _int32(val)
    if t == "bool":
        return val != 0
    if t == "double":
        return struct.unpack("<d", val.to_bytes(8, "little"))[0]
    return struct.unpack("<f", val.to_bytes(4, "little"))[0]  # float


_ZERO: dict[str, Any] = {"string": "", "bytes": "", "int32": 0, "int64": 0, "bool": False,
                         "double": 0.0, "float": 0.0}

# ---------------------------------------------------------------------------
# apimachinery special types
# ---------------------------------------------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _timestamp(data: bytes, micro: bool, where: str) -> str | None:
    """metav1.Time / MicroTime: {1: seconds int64, 2: nanos int32}; an empty
    message is the zero time (None)."""
    if not data:
        return None
    seconds = nanos = 0
    for num, wt, val in _fields(data, where):
        if num == 1:
            seconds = _scalar("int64", wt, val, where + ".seconds")
        elif num == 2:
            nanos = _scalar("int32", wt, val, where + ".nanos")
        else:
            _unknown(num, wt, val, where)
    try:
        t = _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise ProtobufError(f"{where}: timestamp out of range") from None
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _special(t: str, data: bytes, where: str) -> Any:
    if t in ("Time", "MicroTime"):
        return _timestamp(data, t == "MicroTime", where)
    fields = _fields(data, where)
    if t == "Quantity":  # {1: string}
        s = ""
        for num, wt, val in fields:
            if num == 1:
                s = _scalar("string", wt, val, where)
            else:
                _unknown(num, wt, val, where)
        return s
    if t == "IntOrString":  # {1: type (0 int, 1 string), 2: intVal, 3: strVal}
        typ, ival, sval = 0, 0, ""
        for num, wt, val in fields:
            if num == 1:
                typ = _scalar("int64", wt, val, where + ".type")
            elif num == 2:
                ival = _scalar("int32", wt, val, where + ".intVal")
            elif num == 3:
                sval = _scalar("string", wt, val, where + ".strVal")
            else:
                _unknown(num, wt, val, where)
        if typ == 0:
            return ival
        if typ == 1:
            return sval
        raise ProtobufError(f"{where}: invalid IntOrString type {typ}")
    if t in ("FieldsV1", "RawExtension"):  # {1: Raw bytes} holding JSON
        raw = b""
        for num, wt, val in fields:
            if num == 1:
                if wt != _LEN:
                    raise ProtobufError(f"{where}: wire type {wt} does not fit bytes")
                raw = bytes(val)
            else:
                _unknown(num, wt, val, where)
        if not raw:
            return {} if t == "FieldsV1" else None
        try:
            return json.loads(raw)
        except ValueError:
            raise ProtobufError(f"{where}: {t} does not hold JSON") from None
    raise ProtobufError(f"{where}: no decoder for {t}")  # pragma: no cover


def _is_zero(f: Field, v: Any) -> bool:
    """Whether a decoded message/special value is its type's Go zero value."""
    if f.type == "IntOrString":
        return v == 0 and not isinstance(v, str)
    if f.type == "Quantity":
        return v in ("", "0")
    return v is None or v == {}  # Time, MicroTime, FieldsV1, messages


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


def _unknown(num: int, wt: int, val: Any, where: str) -> None:
    """A field the schema does not know: fine only if it carries nothing."""
    if (wt == _LEN and len(val) == 0) or (wt != _LEN and val == 0):
        return
    raise ProtobufError(f"{where}: unknown protobuf field number {num} (wire type {wt})")


def _value(f: Field, wt: int, val: Any, where: str) -> Any:
    """A single (non-repeated) value of field ``f``."""
    if f.kind == "scalar":
        return _scalar(f.type, wt, val, where)
    if wt != _LEN:
        raise ProtobufError(f"{where}: wire type {wt} does not fit message {f.type}")
    if f.kind == "special":
        return _special(f.type, val, where)
    return _message(f.type, val, where)


def _map_entry(f: Field, data: bytes, where: str) -> tuple[str, Any]:
    key: Any = _ZERO.get(f.map_key or "string", "")
    value: Any = None
    present = False
    for num, wt, val in _fields(data, where):
        if num == 1:
            key = _scalar(f.map_key or "string", wt, val, where + ".key")
        elif num == 2:
            value, present = _value(f, wt, val, f"{where}[{key!r}]"), True
        else:
            _unknown(num, wt, val, where)
    if not present:  # an absent value is the zero value of the value type
        value = _ZERO[f.type] if f.kind == "scalar" else _value(f, _LEN, b"", where)
    return key if isinstance(key, str) else str(key), value


def _message(name: str, data: bytes, where: str) -> dict:
    schema = SCHEMA[name]
    # field number -> wire values, in wire order
    seen: dict[int, list[tuple[int, Any]]] = {}
    for num, wt, val in _fields(data, where):
        if num in schema:
            seen.setdefault(num, []).append((wt, val))
        else:
            _unknown(num, wt, val, f"{where} ({name})")
    out: dict[str, Any] = {}
    for num, f in schema.items():  # JSON field order = schema (Go struct) order
        values = seen.get(num)
        if not values:
            continue
        here = f"{where}.{f.json}" if f.json else where
        if f.map_key is not None:
            entries: dict[str, Any] = {}
            for wt, val in values:
                if wt != _LEN:
                    raise ProtobufError(f"{here}: wire type {wt} does not fit a map entry")
                k, v = _map_entry(f, val, here)
                entries[k] = v
            out[f.json] = entries
        elif f.repeated:
            out[f.json] = _repeated(f, values, here)
        elif f.kind == "scalar":
            wt, val = values[-1]  # proto: the last occurrence wins
            v = _scalar(f.type, wt, val, here)
            if f.pointer or v != _ZERO[f.type]:  # non-pointer zero value == unset
                out[f.json] = v
        else:
            # proto: repeated occurrences of a message field merge, which is
            # the same as decoding their concatenation
            for wt, _ in values:
                if wt != _LEN:
                    raise ProtobufError(f"{here}: wire type {wt} does not fit message {f.type}")
            v = _value(f, _LEN, b"".join(bytes(val) for _, val in values), here)
            if f.inline:
                out.update(v)
            elif f.pointer or not _is_zero(f, v):  # non-pointer zero value == unset
                out[f.json] = v
    return out


def _repeated(f: Field, values: list[tuple[int, Any]], where: str) -> list:
    lst: list[Any] = []
    for wt, val in values:
        if f.kind == "scalar" and wt == _LEN and f.type not in ("string", "bytes"):
            # packed encoding of a repeated numeric field
            if f.type in ("double", "float"):
                size, wt2 = (8, _I64) if f.type == "double" else (4, _I32)
                if len(val) % size:
                    raise ProtobufError(f"{where}: truncated packed field")
                nums = [int.from_bytes(val[i:i + size], "little")
                        for i in range(0, len(val), size)]
            else:
                nums, wt2 = _packed_varints(val, where), _VARINT
            lst.extend(_scalar(f.type, wt2, n, where) for n in nums)
        else:
            lst.append(_value(f, wt, val, f"{where}[{len(lst)}]"))
    return lst


def decode_message(name: str, raw: bytes) -> dict:
    """Decode ``raw`` as message ``name`` of :data:`SCHEMA` (no TypeMeta)."""
    if name not in SCHEMA:
        raise ProtobufError(f"no protobuf schema for {name}")
    return _message(name, bytes(raw), name)


def is_protobuf(content_type: str | None) -> bool:
    """Whether a Content-Type header names the Kubernetes protobuf encoding."""
    return (content_type or "").split(";", 1)[0].strip().lower() == CONTENT_TYPE


def decode_k8s_protobuf(body: bytes) -> dict:
    """Decode a ``application/vnd.kubernetes.protobuf`` request body into the
    dict the equivalent JSON body would give (``apiVersion`` and ``kind``
    first).  Raises :class:`ProtobufError` for anything it cannot decode
    faithfully."""
    body = bytes(body)
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message (missing k8s\\x00 prefix)")
    api_version = kind = content_encoding = content_type = ""
    raw = b""
    for num, wt, val in _fields(body[len(MAGIC):], "Unknown"):
        if num == 1:
            if wt != _LEN:
                raise ProtobufError("Unknown.typeMeta: wire type does not fit a message")
            for n2, wt2, v2 in _fields(val, "Unknown.typeMeta"):
                if n2 == 1:
                    api_version = _scalar("string", wt2, v2, "typeMeta.apiVersion")
                elif n2 == 2:
                    kind = _scalar("string", wt2, v2, "typeMeta.kind")
                else:
                    _unknown(n2, wt2, v2, "Unknown.typeMeta")
        elif num == 2:
            if wt != _LEN:
                raise ProtobufError("Unknown.raw: wire type does not fit bytes")
            raw = bytes(val)
        elif num == 3:
            content_encoding = _scalar("string", wt, val, "Unknown.contentEncoding")
        elif num == 4:
            content_type = _scalar("string", wt, val, "Unknown.contentType")
        else:
            _unknown(num, wt, val, "Unknown")
    if content_encoding:
        raise ProtobufError(f"unsupported protobuf content encoding {content_encoding!r}")
    if content_type not in ("", CONTENT_TYPE):
        raise ProtobufError(f"unsupported embedded content type {content_type!r}")
    if not kind:
        raise ProtobufError("protobuf message has no kind")
    name = "DeleteOptions" if kind == "DeleteOptions" else roots().get((api_version, kind))
    if name is None:
        raise ProtobufError(f"no protobuf schema for {kind} in {api_version or 'no apiVersion'}")
    obj = _message(name, raw, kind)
    return {"apiVersion": api_version, "kind": kind, **obj} if api_version else {"kind": kind,
                                                                                 **obj}
