// Command image builds the broker's container image without Docker: an OCI
// image index with one image per platform, each a single layer holding the
// static broker binary, written as an OCI image layout in a tar file.
//
//	image --out bin/image/broker-oci.tar --version v0.3.0 \
//	  --binary linux/arm64=bin/linux-arm64/broker --binary linux/amd64=bin/linux-amd64/broker
//
// The tar's index.json names the image (io.containerd.image.name) so that
// `ctr -n k8s.io images import` and docker's containerd image store tag it on
// load; `crane push` takes the layout once unpacked (broker/k8s/README.md).
// The same inputs give the same bytes: every timestamp is --created.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Where things are inside the image. broker/k8s's StatefulSet mounts the data
// volume at DataDir and runs as UID:GID; this program's test holds the two
// together.
const (
	BinaryPath = "/usr/local/bin/broker"
	DataDir    = "/var/lib/sensorfarm"
	// UID and GID are the broker's numeric user: no /etc/passwd is needed,
	// and Kubernetes' runAsNonRoot can verify a number, not a name. 65532
	// is the "nonroot" user of distroless images.
	UID = 65532
	GID = 65532
)

// ExposedPorts are MQTT, MQTT over TLS and the ops HTTP port (/healthz,
// /readyz, /metrics), as the k8s manifests configure them.
var ExposedPorts = []string{"1883/tcp", "8883/tcp", "9883/tcp"}

// Binary is the broker built for one platform.
type Binary struct {
	Platform v1.Platform
	Path     string
}

// Options say what to build and where to write it.
type Options struct {
	Out        string
	Binaries   []Binary
	Repository string // e.g. docker.io/sensorfarm/broker
	Version    string // the tag, and org.opencontainers.image.version
	Revision   string // the git commit, if known
	Created    time.Time
}

// elfMachines is the ELF machine each Go architecture's binaries carry, so
// that a binary built for the wrong platform is refused, not shipped.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
	"arm":   elf.EM_ARM,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	opts, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(2)
	}
	digest, err := Build(ctx, opts)
	if err != nil {
		log.Error("image not built", "err", err)
		os.Exit(1)
	}
	log.Info("image written", "out", opts.Out, "ref", opts.Repository+":"+opts.Version, "index_digest", digest.String())
	fmt.Print(pinHint(opts.Repository, digest.String()))
}

// pinHint is what `make image` prints: the image by digest, and the lines
// that pin broker/k8s to it. A tag can be moved to another image; a digest
// names these bytes and no others.
func pinHint(repository, digest string) string {
	return fmt.Sprintf(`%s@%s
To run exactly this image, set broker/k8s/kustomization.yaml's images entry to:
  images:
    - name: sensorfarm/broker
      newName: %s
      digest: %s
`, repository, digest, repository, digest)
}

type binaryFlags []Binary

func (b *binaryFlags) String() string { return fmt.Sprint(*b) }

func (b *binaryFlags) Set(s string) error {
	plat, path, ok := strings.Cut(s, "=")
	if !ok || path == "" {
		return fmt.Errorf("want OS/ARCH=FILE, e.g. linux/arm64=bin/linux-arm64/broker: %q", s)
	}
	p, err := v1.ParsePlatform(plat)
	if err != nil {
		return fmt.Errorf("platform %q: %w", plat, err)
	}
	*b = append(*b, Binary{Platform: *p, Path: path})
	return nil
}

func parseFlags(args []string, getenv func(string) string) (Options, error) {
	var o Options
	var bins binaryFlags
	var epoch int64
	if s := getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return Options{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds: %w", s, err)
		}
		epoch = n
	}
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.Out, "out", "", "OCI layout tar `file` to write (required)")
	fs.Var(&bins, "binary", "`OS/ARCH=FILE`: the static broker for one platform (repeat per platform)")
	fs.StringVar(&o.Repository, "repository", "docker.io/sensorfarm/broker", "`name` the image is tagged with on import")
	fs.StringVar(&o.Version, "version", "", "image `version`: the tag and the org.opencontainers.image.version label (required)")
	fs.StringVar(&o.Revision, "revision", "", "source `commit`, for the org.opencontainers.image.revision label")
	fs.Int64Var(&epoch, "created", epoch, "creation time in Unix `seconds` for the config and every file (default $SOURCE_DATE_EPOCH, else 0)")
	if err := fs.Parse(args); err != nil {
		return Options{}, err
	}
	if fs.NArg() > 0 {
		return Options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Binaries = bins
	o.Created = time.Unix(epoch, 0).UTC()
	return o, o.validate()
}

func (o Options) validate() error {
	var errs []error
	if o.Out == "" {
		errs = append(errs, errors.New("--out is required"))
	}
	if len(o.Binaries) == 0 {
		errs = append(errs, errors.New("no --binary given"))
	}
	seen := map[string]bool{}
	for _, b := range o.Binaries {
		p := b.Platform.String()
		if seen[p] {
			errs = append(errs, fmt.Errorf("platform %s given twice", p))
		}
		seen[p] = true
		if _, ok := elfMachines[b.Platform.Architecture]; !ok || b.Platform.OS != "linux" {
			errs = append(errs, fmt.Errorf("platform %s: only linux on amd64, arm64 and arm", p))
		}
	}
	if o.Version == "" {
		errs = append(errs, errors.New("--version is required"))
	} else if _, err := name.NewTag(o.Repository+":"+o.Version, name.StrictValidation); err != nil {
		errs = append(errs, fmt.Errorf("--repository %q with --version %q is not an image reference: %w", o.Repository, o.Version, err))
	}
	return errors.Join(errs...)
}

// Build writes the image index for every binary to o.Out and returns the
// index's digest.
func Build(ctx context.Context, o Options) (v1.Hash, error) {
	if err := o.validate(); err != nil {
		return v1.Hash{}, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, b := range o.Binaries {
		if err := ctx.Err(); err != nil {
			return v1.Hash{}, err
		}
		img, err := platformImage(b, o)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("%s image from %s: %w", b.Platform.String(), b.Path, err)
		}
		plat := b.Platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
	}
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image index: %w", err)
	}
	if err := writeLayoutTar(ctx, idx, o); err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// platformImage is one platform's image: the binary in one layer on nothing.
func platformImage(b Binary, o Options) (v1.Image, error) {
	bin, err := os.ReadFile(b.Path)
	if err != nil {
		return nil, err
	}
	if err := checkELF(bin, b.Platform.Architecture); err != nil {
		return nil, err
	}
	layerTar, err := rootfs(bin, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created:   v1.Time{Time: o.Created},
		CreatedBy: "broker/image: the static broker at " + BinaryPath,
	}})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = b.Platform.OS
	cf.Architecture = b.Platform.Architecture
	cf.Variant = b.Platform.Variant
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint:   []string{BinaryPath},
		User:         fmt.Sprintf("%d:%d", UID, GID),
		WorkingDir:   DataDir,
		ExposedPorts: map[string]struct{}{},
		Labels:       labels(o),
	}
	for _, p := range ExposedPorts {
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	return mutate.ConfigFile(img, cf)
}

func labels(o Options) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "sensorfarm-broker",
		"org.opencontainers.image.description": "sensorfarm MQTT broker (mochi-mqtt): users and ACL, TLS, persistent store, metrics",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
		"org.opencontainers.image.source":      "https://github.com/sensorfarm/sensorfarm",
	}
	if o.Revision != "" {
		l["org.opencontainers.image.revision"] = o.Revision
	}
	return l
}

// checkELF refuses a binary that would not run in the image: one for another
// architecture, or one that needs a dynamic loader and libc, which the image
// does not have.
func checkELF(bin []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	if want := elfMachines[arch]; f.Machine != want {
		return fmt.Errorf("built for %s, not for %s (%s)", f.Machine, arch, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (it names an ELF interpreter): the image has no libc; build with CGO_ENABLED=0")
		}
	}
	return nil
}

// rootfs is the layer's tar: the binary, and the data directory owned by the
// broker's user so that the image also runs without a volume.
func rootfs(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, uid, gid int, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid, ModTime: mtime})
	}
	for _, d := range []string{"usr", "usr/local", "usr/local/bin", "var", "var/lib"} {
		if err := dir(d, 0, 0, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir(strings.TrimPrefix(DataDir, "/"), UID, GID, 0o700); err != nil {
		return nil, err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(BinaryPath, "/"), Mode: 0o755, Size: int64(len(bin)), ModTime: mtime}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeLayoutTar writes the OCI layout to a scratch directory beside o.Out,
// with index.json pointing at the image index under the names containerd
// and docker tag it with, and packs it into o.Out, replaced atomically.
func writeLayoutTar(ctx context.Context, idx v1.ImageIndex, o Options) error {
	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(filepath.Dir(o.Out), ".oci-layout-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	lp, err := layout.Write(scratch, empty.Index)
	if err != nil {
		return fmt.Errorf("OCI layout in %s: %w", scratch, err)
	}
	err = lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		// containerd (ctr import, docker's containerd store) names the
		// image after this; org.opencontainers.image.ref.name is the OCI
		// spec's tag for tools that take a base name.
		"io.containerd.image.name":          o.Repository + ":" + o.Version,
		"org.opencontainers.image.ref.name": o.Version,
	}))
	if err != nil {
		return fmt.Errorf("OCI layout in %s: %w", scratch, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.Out), filepath.Base(o.Out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if err := packDir(tmp, scratch, o.Created); err != nil {
		tmp.Close()
		return fmt.Errorf("pack %s: %w", o.Out, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), o.Out); err != nil {
		return fmt.Errorf("write %s: %w", o.Out, err)
	}
	return nil
}

// packDir tars root's files in a fixed order with fixed owners, modes and
// times, so that the same layout gives the same bytes.
func packDir(w io.Writer, root string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: filepath.ToSlash(rel) + "/", Mode: 0o755, ModTime: mtime}); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.ToSlash(rel), Mode: 0o644, Size: fi.Size(), ModTime: mtime}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: not a regular file or directory", rel)
		}
	}
	return tw.Close()
}
