package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

// debSpec is what goes into the Debian package besides the repository's
// files.
type debSpec struct {
	Version string    // Debian version (debversion.FromDescribe)
	Arch    string    // Debian architecture (debversion.Arch)
	Binary  string    // path of the static metalbond binary
	Repo    string    // root of the repository (contrib/ is read from it)
	MTime   time.Time // every file's time: the last commit's
}

// debFile is one file of the package taken from the repository.
type debFile struct {
	src, dst string
	kind     string // "" for a plain file, files.TypeConfigNoReplace for a conffile
	mode     fs.FileMode
}

// debFiles are the package's files from the repository. The units go to
// /usr/lib/systemd/system, which is /lib/systemd/system on a merged-/usr
// Debian and searched by systemd either way.
var debFiles = []debFile{
	{"contrib/systemd/metalbond-server.service", "/usr/lib/systemd/system/metalbond-server.service", "", 0o644},
	{"contrib/systemd/metalbond-client.service", "/usr/lib/systemd/system/metalbond-client.service", "", 0o644},
	{"contrib/systemd/metalbond-tunnel.service", "/usr/lib/systemd/system/metalbond-tunnel.service", "", 0o644},
	{"contrib/etc/server.yaml", "/etc/metalbond/server.yaml", files.TypeConfigNoReplace, 0o644},
	{"contrib/etc/client.yaml", "/etc/metalbond/client.yaml", files.TypeConfigNoReplace, 0o644},
	{"contrib/etc/tunnel.env", "/etc/metalbond/tunnel.env", files.TypeConfigNoReplace, 0o644},
	{"contrib/etc/rt_protos.conf", "/etc/iproute2/rt_protos.d/metalbond.conf", files.TypeConfigNoReplace, 0o644},
	{"LICENSE", "/usr/share/doc/metalbond/copyright", "", 0o644},
}

// debInfo describes the package to nfpm.
func debInfo(s debSpec) (*nfpm.Info, error) {
	contents := files.Contents{
		{Source: s.Binary, Destination: "/usr/bin/metalbond", FileInfo: fileInfo(0o755, s.MTime)},
		// Deployed images and units call /usr/sbin/metalbond.
		{Source: "../bin/metalbond", Destination: "/usr/sbin/metalbond", Type: files.TypeSymlink, FileInfo: fileInfo(0o777, s.MTime)},
		{Destination: "/etc/metalbond", Type: files.TypeDir, FileInfo: fileInfo(0o755, s.MTime)},
	}
	for _, f := range debFiles {
		src := filepath.Join(s.Repo, filepath.FromSlash(f.src))
		if _, err := os.Stat(src); err != nil {
			return nil, err
		}
		contents = append(contents, &files.Content{Source: src, Destination: f.dst, Type: f.kind, FileInfo: fileInfo(f.mode, s.MTime)})
	}
	script := func(name string) string { return filepath.Join(s.Repo, "contrib", "debian", name) }
	info := &nfpm.Info{
		Name:          "metalbond",
		Arch:          s.Arch,
		Platform:      "linux",
		Version:       s.Version,
		VersionSchema: "none", // already a Debian version: keep it as it is
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "metalbond developers <metalbond@users.noreply.github.com>",
		Description: "MetalBond route server and client (protocol v1)\n" +
			"Distributes overlay routes in a datacenter: hypervisors announce the\n" +
			"prefixes of their virtual machines per VNI to route servers, which\n" +
			"reflect them to every subscribed hypervisor; clients install what they\n" +
			"learn into Linux routing tables. Units: metalbond-server,\n" +
			"metalbond-client, metalbond-tunnel; configuration in /etc/metalbond/.",
		Homepage: "https://github.com/metalbond/metalbond",
		License:  "Apache-2.0",
		MTime:    s.MTime,
		Overridables: nfpm.Overridables{
			Depends:  []string{"iproute2", "ethtool"},
			Contents: contents,
			Umask:    0o022,
			Scripts: nfpm.Scripts{
				PostInstall: script("postinst"),
				PreRemove:   script("prerm"),
				PostRemove:  script("postrm"),
			},
		},
	}
	for _, p := range []string{info.Scripts.PostInstall, info.Scripts.PreRemove, info.Scripts.PostRemove} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return info, nil
}

func fileInfo(mode fs.FileMode, mtime time.Time) *files.ContentFileInfo {
	return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: mtime}
}

// writeDeb writes the package described by s to out.
func writeDeb(s debSpec, out string) error {
	info, err := debInfo(s)
	if err != nil {
		return err
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return fmt.Errorf("prepare package: %w", err)
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := deb.Default.Package(info, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write package: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}
