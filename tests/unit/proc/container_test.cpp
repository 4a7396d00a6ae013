// Container, pod and service detection from /proc/PID/cgroup texts as
// Docker, containerd, CRI-O, Podman, Kubernetes, LXC and systemd write them
// (cgroup v1, v2 and hybrid), and NSpid parsing.
#include "proc/container.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "support/files.h"
#include "support/temp_dir.h"

namespace krait::test {
namespace {

using proc::ContainerInfo;
using proc::parse_cgroup;

const std::string kId = "4c5e7e4a7d3b0e6f6d2b1a9c8f7e6d5c4b3a2918f7e6d5c4b3a29180f7e6d5c4";
const std::string kPod = "2c7d8a7e-2b1f-4c6a-9b1e-8d5f4c3b2a19";
const std::string kPodUnderscored = "2c7d8a7e_2b1f_4c6a_9b1e_8d5f4c3b2a19";

ContainerInfo parse(const std::string& text) {
  auto info = parse_cgroup(text);
  EXPECT_TRUE(info.ok()) << text << ": " << (info.ok() ? "" : info.error().message);
  return info.ok() ? *info : ContainerInfo{};
}

struct Case {
  std::string what;
  std::string cgroup;
  std::string runtime, id, pod, unit;
};

TEST(ContainerTest, RecognisesRealWorldLayouts) {
  const std::vector<Case> cases = {
      {"docker, cgroup v2, systemd driver", "0::/system.slice/docker-" + kId + ".scope\n", "docker",
       kId, "", ""},
      {"docker, cgroup v2, cgroupfs driver", "0::/docker/" + kId + "\n", "docker", kId, "", ""},
      {"docker, cgroup v1",
       "12:pids:/docker/" + kId + "\n11:hugetlb:/docker/" + kId + "\n10:net_cls,net_prio:/docker/" +
           kId + "\n4:memory:/docker/" + kId + "\n1:name=systemd:/docker/" + kId + "\n0::/\n",
       "docker", kId, "", ""},
      {"kubernetes containerd, systemd driver, burstable",
       "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kPodUnderscored +
           ".slice/cri-containerd-" + kId + ".scope\n",
       "containerd", kId, kPod, ""},
      {"kubernetes containerd, guaranteed",
       "0::/kubepods.slice/kubepods-pod" + kPodUnderscored + ".slice/cri-containerd-" + kId +
           ".scope\n",
       "containerd", kId, kPod, ""},
      {"kubernetes cgroupfs driver, cgroup v1",
       "11:memory:/kubepods/besteffort/pod" + kPod + "/" + kId +
           "\n1:name=systemd:/kubepods/besteffort/pod" + kPod + "/" + kId + "\n",
       "", kId, kPod, ""},
      {"kubernetes with docker, systemd driver",
       "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + kPodUnderscored +
           ".slice/docker-" + kId + ".scope\n",
       "docker", kId, kPod, ""},
      {"cri-o",
       "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kPodUnderscored +
           ".slice/crio-" + kId + ".scope\n",
       "cri-o", kId, kPod, ""},
      {"cri-o conmon",
       "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kPodUnderscored +
           ".slice/crio-conmon-" + kId + ".scope\n",
       "cri-o", kId, kPod, ""},
      {"podman rootful with a container subgroup",
       "0::/machine.slice/libpod-" + kId + ".scope/container\n", "podman", kId, "", ""},
      {"podman rootless",
       "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + kId + ".scope\n",
       "podman", kId, "", ""},
      {"nerdctl", "0::/system.slice/nerdctl-" + kId + ".scope\n", "containerd", kId, "", ""},
      {"lxc", "0::/lxc.payload.web01/system.slice/gunicorn.service\n", "lxc", "web01", "", ""},
      {"seen from krait's own cgroup namespace",
       "0::/../../kubepods-besteffort-pod" + kPodUnderscored + ".slice/cri-containerd-" + kId +
           ".scope\n",
       "containerd", kId, kPod, ""},
      {"systemd service", "0::/system.slice/gunicorn.service\n", "", "", "", "gunicorn.service"},
      {"user service",
       "0::/user.slice/user-1000.slice/user@1000.service/app.slice/jupyter.service\n", "", "", "",
       "jupyter.service"},
      {"login session", "0::/user.slice/user-1000.slice/session-3.scope\n", "", "", "", ""},
      {"host root", "0::/\n", "", "", "", ""},
      {"hybrid host, a 32-digit id is not a container",
       "9:name=systemd:/\n4:memory:/process_api/41d2a1917ff913d4bd34d6811a42dbd4\n0::/\n", "", "",
       "", ""},
  };
  for (const Case& c : cases) {
    const ContainerInfo info = parse(c.cgroup);
    EXPECT_EQ(info.runtime, c.runtime) << c.what;
    EXPECT_EQ(info.container_id, c.id) << c.what;
    EXPECT_EQ(info.pod_uid, c.pod) << c.what;
    EXPECT_EQ(info.systemd_unit, c.unit) << c.what;
    EXPECT_EQ(info.in_container(), !c.id.empty()) << c.what;
  }
}

// A process can create cgroups below its own and name them like another
// container: a container with a delegated cgroup tree, or any user in the
// tree systemd delegates to it. The id its runtime made is the one kept.
TEST(ContainerTest, CgroupsAProcessMadeItselfDoNotNameItsContainer) {
  const std::string other = std::string(64, 'e');
  ContainerInfo nested =
      parse("0::/system.slice/docker-" + kId + ".scope/docker-" + other + ".scope\n");
  EXPECT_EQ(nested.container_id, kId);
  EXPECT_TRUE(nested.delegated_to.empty());
  ContainerInfo k8s =
      parse("0::/kubepods.slice/kubepods-pod" + kPodUnderscored + ".slice/cri-containerd-" + kId +
            ".scope/kubepods-pod" + std::string("11111111_2222_3333_4444_555555555555") +
            ".slice/cri-containerd-" + other + ".scope\n");
  EXPECT_EQ(k8s.container_id, kId);
  EXPECT_EQ(k8s.pod_uid, kPod);
  ContainerInfo user = parse("0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker-" +
                             kId + ".scope\n");
  EXPECT_EQ(user.container_id, kId);
  EXPECT_EQ(user.delegated_to, "1000");
  EXPECT_TRUE(parse("0::/system.slice/docker-" + kId + ".scope\n").delegated_to.empty());
}

TEST(ContainerTest, ReportsTheUnifiedPathElseTheSystemdOne) {
  EXPECT_EQ(parse("1:name=systemd:/docker/" + kId + "\n0::/system.slice/x.service\n").cgroup_path,
            "/system.slice/x.service");
  EXPECT_EQ(parse("4:memory:/a\n1:name=systemd:/b\n").cgroup_path, "/b");
  EXPECT_EQ(parse("4:memory:/a\n").cgroup_path, "/a");
}

TEST(ContainerTest, RejectsMalformedLines) {
  auto info = parse_cgroup("0::/\nnot a cgroup line\n");
  ASSERT_FALSE(info.ok());
  EXPECT_NE(info.error().message.find("line 2"), std::string::npos) << info.error().message;
  EXPECT_TRUE(parse_cgroup("").ok());
}

TEST(ContainerTest, ParsesNSpid) {
  auto pids = proc::parse_nspid("Name:\tpython3\nPid:\t4242\nNSpid:\t4242\t17\t1\nPPid:\t1\n");
  ASSERT_TRUE(pids.ok()) << pids.error().message;
  EXPECT_EQ(*pids, (std::vector<int>{4242, 17, 1}));
  pids = proc::parse_nspid("Name:\tpython3\nPid:\t4242\n");
  ASSERT_TRUE(pids.ok());
  EXPECT_TRUE(pids->empty());
  EXPECT_FALSE(proc::parse_nspid("NSpid:\t12\tx\n").ok());
  EXPECT_FALSE(proc::parse_nspid("NSpid:\n").ok());
}

TEST(ContainerTest, ReadsTheLiveProcess) {
  auto pids = proc::read_nspid(::getpid());
  ASSERT_TRUE(pids.ok()) << pids.error().message;
  ASSERT_FALSE(pids->empty()) << "kernel without NSpid in /proc/PID/status (needs 4.1+)";
  EXPECT_EQ(pids->front(), ::getpid());
  auto info = proc::read_container_info(::getpid());
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_FALSE(info->cgroup_path.empty());
  auto gone = proc::read_container_info(0x7ffffff0);
  ASSERT_FALSE(gone.ok());
}

TEST(ContainerTest, ReadsFromAnotherProcRoot) {
  TempDir root;
  std::filesystem::create_directories(root.file("77"));
  write_text_file(root.file("77/cgroup"), "0::/system.slice/docker-" + kId + ".scope\n");
  write_text_file(root.file("77/status"), "Name:\tpython\nNSpid:\t77\t1\n");
  auto info = proc::read_container_info(77, root.path());
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->container_id, kId);
  auto pids = proc::read_nspid(77, root.path());
  ASSERT_TRUE(pids.ok());
  EXPECT_EQ(*pids, (std::vector<int>{77, 1}));
}

}  // namespace
}  // namespace krait::test
