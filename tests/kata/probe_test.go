// Kata-npu test probe: load one Kata configuration with Kata's own code and print what Kata made of it.
//
// Copied next to pkg/katautils in a build copy of Kata's runtime and compiled with `go test -c` by
// tests/kata/build.py (never part of Kata itself). Run:
//   KATA_NPU_PROBE_CONFIG=/etc/kata-containers/configuration.toml [KATA_NPU_PROBE_ROOT=/tmp/root] \
//     kata-config-probe -test.run '^TestKataNpuProbe$'
// With KATA_NPU_PROBE_ROOT the probe chroots there first, so the files Kata stats (hypervisor, kernel, image,
// firmware, /dev/vhost-vsock) can be stand-ins in a test root. It prints one line:
//   KATA-NPU-PROBE {"undecoded": {file: [keys]}, "decode_error": "", "load_error": "", "raw": {...}, "values": {...}}

package katautils

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/kata-containers/kata-containers/src/runtime/pkg/device/config"
	vc "github.com/kata-containers/kata-containers/src/runtime/virtcontainers"
)

type kataNpuProbeResult struct {
	Undecoded   map[string][]string    `json:"undecoded"`
	DecodeError string                 `json:"decode_error"`
	LoadError   string                 `json:"load_error"`
	Raw         map[string]interface{} `json:"raw"`
	Values      map[string]interface{} `json:"values"`
}

// undecodedKeys decodes one file alone into Kata's tomlConfig and lists the keys Kata has no field for.
func undecodedKeys(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var tc tomlConfig
	md, err := toml.Decode(string(data), &tc)
	if err != nil {
		return nil, err
	}
	keys := []string{}
	for _, k := range md.Undecoded() {
		keys = append(keys, k.String())
	}
	sort.Strings(keys)
	return keys, nil
}

func kataNpuProbe(cfg string) kataNpuProbeResult {
	r := kataNpuProbeResult{Undecoded: map[string][]string{}, Raw: map[string]interface{}{}, Values: map[string]interface{}{}}
	files := []string{cfg}
	if entries, err := os.ReadDir(filepath.Join(filepath.Dir(cfg), "config.d")); err == nil {
		for _, e := range entries { // Kata applies them in ReadDir (name) order
			files = append(files, filepath.Join(filepath.Dir(cfg), "config.d", e.Name()))
		}
	}
	for _, f := range files {
		keys, err := undecodedKeys(f)
		if err != nil {
			r.DecodeError = fmt.Sprintf("%s: %v", f, err)
			break
		}
		r.Undecoded[f] = keys
	}
	// The merged document as Kata's decoder (with drop-ins) sees it, before defaults and clamps.
	if tc, _, err := decodeConfig(cfg); err == nil {
		if h, ok := tc.Hypervisor["qemu"]; ok {
			r.Raw["pcie_root_port"] = h.PCIeRootPort
			r.Raw["kernel_params"] = h.KernelParams
			r.Raw["default_memory"] = h.MemorySize
		}
		r.Raw["hypervisors"] = len(tc.Hypervisor)
	} else if r.DecodeError == "" {
		r.DecodeError = err.Error()
	}

	_, rc, err := LoadConfiguration(cfg, true)
	if err != nil {
		r.LoadError = err.Error()
		return r
	}
	hc := rc.HypervisorConfig
	// The root parameters QEMU's launch adds for an image (qemu_arch_base.go handleImagePath): dax only on an
	// nvdimm root, and only where the arch enables it (qemu_amd64.go dax: true; arm64 false).
	rootParams := ""
	if hc.ImagePath != "" {
		dax := !hc.DisableImageNvdimm && goruntime.GOARCH == "amd64"
		if p, err := vc.GetKernelRootParams(hc.RootfsType, hc.DisableImageNvdimm, dax, hc.KernelVerityParams); err == nil {
			rootParams = strings.Join(vc.SerializeParams(p, "="), " ")
		} else {
			rootParams = "error: " + err.Error()
		}
	}
	vfioMode := "vfio"
	if rc.VfioMode == config.VFIOModeGuestKernel {
		vfioMode = "guest-kernel"
	}
	r.Values = map[string]interface{}{
		"hypervisor_type":              string(rc.HypervisorType),
		"path":                         hc.HypervisorPath,
		"kernel":                       hc.KernelPath,
		"initrd":                       hc.InitrdPath,
		"image":                        hc.ImagePath,
		"firmware":                     hc.FirmwarePath,
		"machine_type":                 hc.HypervisorMachineType,
		"kernel_params":                strings.Join(vc.SerializeParams(hc.KernelParams, "="), " "),
		"default_memory":               hc.MemorySize,
		"default_maxmemory":            hc.DefaultMaxMemorySize,
		"default_vcpus":                hc.NumVCPUsF,
		"pcie_root_port":               hc.PCIeRootPort,
		"cold_plug_vfio":               hc.ColdPlugVFIO.String(),
		"hot_plug_vfio":                hc.HotPlugVFIO.String(),
		"guest_hook_path":              hc.GuestHookPath,
		"enable_annotations":           hc.EnableAnnotations,
		"shared_fs":                    hc.SharedFS,
		"virtio_fs_daemon":             hc.VirtioFSDaemon,
		"virtio_fs_extra_args":         hc.VirtioFSExtraArgs,
		"disable_image_nvdimm":         hc.DisableImageNvdimm,
		"rootfs_type":                  hc.RootfsType,
		"root_params":                  rootParams,
		"vfio_mode":                    vfioMode,
		"static_sandbox_resource_mgmt": rc.StaticSandboxResourceMgmt,
	}
	return r
}

func TestKataNpuProbe(t *testing.T) {
	cfg := os.Getenv("KATA_NPU_PROBE_CONFIG")
	if cfg == "" {
		t.Skip("set KATA_NPU_PROBE_CONFIG")
	}
	if root := os.Getenv("KATA_NPU_PROBE_ROOT"); root != "" {
		if err := syscall.Chroot(root); err != nil {
			t.Fatalf("chroot %s: %v", root, err)
		}
		if err := os.Chdir("/"); err != nil {
			t.Fatal(err)
		}
	}
	out, err := json.Marshal(kataNpuProbe(cfg))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("KATA-NPU-PROBE %s\n", out)
}
