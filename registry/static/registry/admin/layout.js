'use strict';
// Narrow screens start with the admin's navigation sidebar closed, so the page keeps its width.
//
// Django's nav_sidebar.js (deferred, and earlier in the page than this file) opens the sidebar
// unless the person closed it before (localStorage "django.admin.navSidebarIsOpen"). Below
// NARROW pixels, with no choice stored, this closes it through the toggle itself (so the toggle's
// own state stays right) and then forgets the "false" that click stored: the default stays a
// default, and a wide window still opens with the sidebar. Once the person uses the toggle, their
// choice is stored by Django's script and wins at every width.
{
    const NARROW = 1024;  // Django's own "tablet" breakpoint (responsive.css)
    const KEY = 'django.admin.navSidebarIsOpen';
    const toggle = document.getElementById('toggle-nav-sidebar');
    const main = document.getElementById('main');
    if (toggle && main && window.innerWidth < NARROW && localStorage.getItem(KEY) === null
        && main.classList.contains('shifted')) {
        toggle.click();
        localStorage.removeItem(KEY);
    }
}
