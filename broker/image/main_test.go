package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// testBinaries builds a tiny static program for each architecture that
// prints its GOARCH: small enough to build in a second, real enough that
// the image's entrypoint can be run.
func testBinaries(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	src := "package main\n\nimport (\n\t\"fmt\"\n\t\"runtime\"\n)\n\nfunc main() { fmt.Println(\"broker-stand-in\", runtime.GOARCH) }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module standin\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, arch := range []string{"arm64", "amd64"} {
		bin := filepath.Join(dir, "broker-"+arch)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS=")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the %s stand-in: %v\n%s", arch, err, b)
		}
		out[arch] = bin
	}
	return out
}

func options(t *testing.T, bins map[string]string, out string) Options {
	t.Helper()
	return Options{
		Out: out,
		Binaries: []Binary{
			{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}, Path: bins["arm64"]},
			{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Path: bins["amd64"]},
		},
		Repository: "docker.io/sensorfarm/broker",
		Version:    "v9.8.7-3-gabcdef0",
		Revision:   "abcdef0",
		Created:    time.Date(2026, 11, 27, 1, 2, 3, 0, time.UTC),
	}
}

// untar unpacks the layout tar as a user would before `crane push`,
// refusing anything but plain files and directories inside dst.
func untar(t *testing.T, file, dst string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		p := filepath.Join(dst, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dst+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q leaves the directory", file, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: entry %q has type %c; a layout holds files and directories", file, h.Name, h.Typeflag)
		}
	}
}

// layerFiles reads a layer's tar into a map of headers and contents.
func layerFiles(t *testing.T, l v1.Layer) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, data
		}
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, b
	}
}

func TestBuildReadBack(t *testing.T) {
	bins := testBinaries(t)
	out := filepath.Join(t.TempDir(), "image", "broker-oci.tar")
	o := options(t, bins, out)
	digest, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	untar(t, out, dir)
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("read the OCI layout back: %v", err)
	}
	topManifest, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(topManifest.Manifests) != 1 {
		t.Fatalf("index.json lists %d entries, want 1 (the image index)", len(topManifest.Manifests))
	}
	entry := topManifest.Manifests[0]
	if entry.MediaType != types.OCIImageIndex || entry.Digest != digest {
		t.Errorf("index.json points at %s %s, want the image index %s", entry.MediaType, entry.Digest, digest)
	}
	if got, want := entry.Annotations["io.containerd.image.name"], "docker.io/sensorfarm/broker:"+o.Version; got != want {
		t.Errorf("io.containerd.image.name %q, want %q", got, want)
	}
	if got := entry.Annotations["org.opencontainers.image.ref.name"]; got != o.Version {
		t.Errorf("org.opencontainers.image.ref.name %q, want %q", got, o.Version)
	}

	idx, err := top.ImageIndex(entry.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// Every blob is there, with the digest and size its descriptor says.
	if err := validate.Index(idx); err != nil {
		t.Fatalf("the image index does not validate: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	wantMachine := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}
	var platforms []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("manifest %s has no platform", d.Digest)
		}
		arch := d.Platform.Architecture
		platforms = append(platforms, d.Platform.String())
		t.Run(d.Platform.String(), func(t *testing.T) {
			if d.MediaType != types.OCIManifestSchema1 {
				t.Errorf("media type %s, want %s", d.MediaType, types.OCIManifestSchema1)
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS != d.Platform.OS || cf.Architecture != arch {
				t.Errorf("config says %s/%s, the index %s", cf.OS, cf.Architecture, d.Platform)
			}
			if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/broker"}) {
				t.Errorf("entrypoint %q", cf.Config.Entrypoint)
			}
			uid, _, _ := strings.Cut(cf.Config.User, ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Errorf("user %q: want a numeric non-root UID (runAsNonRoot can check only a number)", cf.Config.User)
			}
			if cf.Config.WorkingDir != DataDir {
				t.Errorf("working dir %q", cf.Config.WorkingDir)
			}
			for _, p := range []string{"1883/tcp", "8883/tcp", "9883/tcp"} {
				if _, ok := cf.Config.ExposedPorts[p]; !ok {
					t.Errorf("port %s not exposed: %v", p, cf.Config.ExposedPorts)
				}
			}
			if got := cf.Config.Labels["org.opencontainers.image.version"]; got != o.Version {
				t.Errorf("version label %q, want %q", got, o.Version)
			}
			if !cf.Created.Time.Equal(o.Created) {
				t.Errorf("created %s, want %s", cf.Created.Time, o.Created)
			}
			if len(cf.History) != 1 || !cf.History[0].Created.Time.Equal(o.Created) {
				t.Errorf("history %+v: want one entry, created %s", cf.History, o.Created)
			}

			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			if len(layers) != 1 {
				t.Fatalf("%d layers, want 1", len(layers))
			}
			if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
				t.Errorf("layer media type %s, want %s", mt, types.OCILayer)
			}
			hdrs, data := layerFiles(t, layers[0])
			bin, ok := data["usr/local/bin/broker"]
			if !ok {
				t.Fatalf("the layer has no usr/local/bin/broker: %v", slices.Sorted(maps.Keys(hdrs)))
			}
			if hdrs["usr/local/bin/broker"].Mode&0o111 == 0 {
				t.Errorf("usr/local/bin/broker mode %o is not executable", hdrs["usr/local/bin/broker"].Mode)
			}
			f, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Fatalf("usr/local/bin/broker is not ELF: %v", err)
			}
			if f.Machine != wantMachine[arch] {
				t.Errorf("usr/local/bin/broker is built for %s; the %s image needs %s", f.Machine, arch, wantMachine[arch])
			}
			in, err := os.ReadFile(bins[arch])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(bin, in) {
				t.Errorf("usr/local/bin/broker differs from %s", bins[arch])
			}
			d := hdrs[strings.TrimPrefix(DataDir, "/")+"/"]
			if d == nil || d.Uid != UID || d.Gid != GID || d.Typeflag != tar.TypeDir {
				t.Errorf("the data directory %s is missing or not owned by %d:%d: %+v", DataDir, UID, GID, d)
			}

			// The binary out of the layer runs, on this machine or under
			// qemu, and is the one built for this architecture.
			exe := filepath.Join(t.TempDir(), "broker")
			if err := os.WriteFile(exe, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			argv := []string{exe}
			if arch == "arm64" {
				argv = []string{"qemu-aarch64-static", exe}
				if _, err := exec.LookPath(argv[0]); err != nil {
					t.Fatalf("%s is not installed (make deps installs qemu-user-static): %v", argv[0], err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
			if err != nil {
				t.Fatalf("run %s from the layer: %v", arch, err)
			}
			if want := "broker-stand-in " + arch + "\n"; string(got) != want {
				t.Errorf("the %s binary printed %q, want %q", arch, got, want)
			}
		})
	}
	slices.Sort(platforms)
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Errorf("platforms %v, want %v", platforms, want)
	}

	// Same inputs, same bytes: a rebuild does not change the digest a
	// cluster pinned.
	again := filepath.Join(t.TempDir(), "again.tar")
	o.Out = again
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if a, b := fileSum(t, out), fileSum(t, again); a != b {
		t.Errorf("two builds from the same inputs differ: %x, %x", a, b)
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestBuildRefusesWrongBinaries(t *testing.T) {
	bins := testBinaries(t)
	out := filepath.Join(t.TempDir(), "broker-oci.tar")

	swapped := options(t, bins, out)
	swapped.Binaries[0].Path, swapped.Binaries[1].Path = bins["amd64"], bins["arm64"]
	if _, err := Build(context.Background(), swapped); err == nil || !strings.Contains(err.Error(), "EM_X86_64") {
		t.Errorf("an amd64 binary for the arm64 image: err %v", err)
	}

	// The host's /bin/true is linked against libc, which the image lacks.
	dynamic := options(t, bins, out)
	dynamic.Binaries = dynamic.Binaries[1:]
	dynamic.Binaries[0].Path = "/bin/true"
	if _, err := Build(context.Background(), dynamic); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("a dynamically linked binary: err %v", err)
	}

	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused build left %s behind: %v", out, err)
	}
}

func TestParseFlags(t *testing.T) {
	env := func(k string) string {
		if k == "SOURCE_DATE_EPOCH" {
			return "1700000000"
		}
		return ""
	}
	o, err := parseFlags([]string{"--out", "x.tar", "--version", "v1", "--binary", "linux/arm64=a", "--binary", "linux/amd64=b"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Binaries) != 2 || o.Binaries[0].Platform.Architecture != "arm64" || o.Binaries[1].Path != "b" {
		t.Errorf("binaries %+v", o.Binaries)
	}
	if !o.Created.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created %s, want SOURCE_DATE_EPOCH", o.Created)
	}
	for _, bad := range [][]string{
		{"--out", "x.tar", "--version", "v1"},
		{"--out", "x.tar", "--version", "v1", "--binary", "linux/arm64"},
		{"--out", "x.tar", "--version", "v1", "--binary", "linux/riscv64=a"},
		{"--out", "x.tar", "--version", "v1", "--binary", "linux/arm64=a", "--binary", "linux/arm64=b"},
		{"--out", "x.tar", "--version", "no spaces", "--binary", "linux/arm64=a"},
		{"--version", "v1", "--binary", "linux/arm64=a"},
	} {
		if _, err := parseFlags(bad, env); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestImageMatchesManifests holds the image and broker/k8s's StatefulSet
// together: the pod runs as the image's user, mounts the data volume where
// the image's data directory is, and opens only ports the image exposes.
func TestImageMatchesManifests(t *testing.T) {
	b, err := os.ReadFile("../k8s/statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	if err := yaml.Unmarshal(b, &sts); err != nil {
		t.Fatal(err)
	}
	psc := sts.Spec.Template.Spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != UID || psc.RunAsGroup == nil || *psc.RunAsGroup != GID {
		t.Errorf("the pod does not run as the image's user %d:%d", UID, GID)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	var claims []string
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		claims = append(claims, pvc.Name)
	}
	var dataMounted bool
	for _, m := range c.VolumeMounts {
		dataMounted = dataMounted || (m.MountPath == DataDir && slices.Contains(claims, m.Name))
	}
	if !dataMounted {
		t.Errorf("no volume claim is mounted at the image's data directory %s", DataDir)
	}
	for _, p := range c.Ports {
		if !slices.Contains(ExposedPorts, strconv.Itoa(int(p.ContainerPort))+"/tcp") {
			t.Errorf("container port %s %d is not exposed by the image (%v)", p.Name, p.ContainerPort, ExposedPorts)
		}
	}
}

// The hint make image prints is a kustomize images entry, by digest.
func TestPinHint(t *testing.T) {
	h := pinHint("docker.io/sensorfarm/broker", "sha256:"+strings.Repeat("ab", 32))
	if !strings.HasPrefix(h, "docker.io/sensorfarm/broker@sha256:abab") || !strings.Contains(h, "      digest: sha256:abab") {
		t.Errorf("hint:\n%s", h)
	}
}
