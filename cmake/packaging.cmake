# Installation layout and the Debian package: being written.
