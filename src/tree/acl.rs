//! POSIX ACL entry tags (`include/uapi/linux/posix_acl.h`), shared by the
//! tar reader (ACL text to the kernel's xattr format) and the ext4 writer
//! (xattr format to ext4's on-disk one).

/// The owner.
pub const ACL_USER_OBJ: u16 = 0x01;
/// A named user.
pub const ACL_USER: u16 = 0x02;
/// The owning group.
pub const ACL_GROUP_OBJ: u16 = 0x04;
/// A named group.
pub const ACL_GROUP: u16 = 0x08;
/// The mask.
pub const ACL_MASK: u16 = 0x10;
/// Everyone else.
pub const ACL_OTHER: u16 = 0x20;
