-- target: base.licence
-- key: holder_id
-- incremental: no
-- sources: identity_card(resident_id), degree_certificate(resident_id), marriage_registration(male_id, female_id), business_licence(uscc), business_registration(uscc), birth_certificate(mother_id), nurse_registration(resident_id), public_credit_record(uscc)
-- Electronic licence library (电子证照库): one row per licence and holder: type, holder (a
-- resident ID or a USCC), number, issuer, valid from / to, status on the run date (有效,
-- 过期 expired, 注销 cancelled, 吊销 revoked, 失效 superseded: a marriage certificate after the
-- couple's divorce), and the resource that supplied it and when (licence_src[_at]). The
-- administrative licences a company holds (食品经营许可 ...) come from the credit platform's
-- 双公示 records (record type 行政许可; the decision number is the licence's number).
-- Rebuilt in full: the status depends on the run date.
WITH reg AS (
    SELECT uscc, status FROM {{ source('business_registration') }}
),
marriage AS (
    SELECT m.*,
           CASE WHEN m.reg_type = '结婚' AND EXISTS (
                    SELECT 1 FROM {{ source('marriage_registration') }} d
                    WHERE d.reg_type = '离婚' AND d.male_id = m.male_id AND d.female_id = m.female_id
                      AND d.reg_date >= m.reg_date)
                THEN '失效' ELSE '有效' END AS status
    FROM {{ source('marriage_registration') }} m
)
SELECT '居民身份证' AS licence_type, 'resident_id' AS holder_kind, resident_id AS holder_id, name AS holder_name,
       resident_id AS licence_no, issuing_authority AS issuer, valid_from, valid_to,
       CASE WHEN valid_to IS NOT NULL AND valid_to < :run_date THEN '过期' ELSE '有效' END AS status,
       {{ code('identity_card') }} AS licence_src, _valid_from AS licence_src_at
FROM {{ source('identity_card') }}
UNION ALL
SELECT '学历学位证书', 'resident_id', resident_id, name, cert_no, school, graduation_date, NULL, '有效',
       {{ code('degree_certificate') }}, _valid_from
FROM {{ source('degree_certificate') }}
UNION ALL
SELECT CASE reg_type WHEN '离婚' THEN '离婚证' ELSE '结婚证' END, 'resident_id', male_id, male_name, cert_no,
       reg_office, reg_date, NULL, status, {{ code('marriage_registration') }}, _valid_from
FROM marriage
UNION ALL
SELECT CASE reg_type WHEN '离婚' THEN '离婚证' ELSE '结婚证' END, 'resident_id', female_id, female_name, cert_no,
       reg_office, reg_date, NULL, status, {{ code('marriage_registration') }}, _valid_from
FROM marriage
UNION ALL
SELECT '营业执照', 'uscc', l.uscc, l.name, l.licence_no, l.issuing_authority, l.valid_from, l.valid_until,
       CASE WHEN r.status = '吊销' THEN '吊销' WHEN r.status = '注销' THEN '注销'
            WHEN l.valid_until IS NOT NULL AND l.valid_until < :run_date THEN '过期' ELSE '有效' END,
       {{ code('business_licence') }}, l._valid_from
FROM {{ source('business_licence') }} l
LEFT JOIN reg r ON r.uscc = l.uscc
UNION ALL
SELECT '出生医学证明', 'resident_id', mother_id, mother_name, cert_no, hospital, issue_date, NULL, '有效',
       {{ code('birth_certificate') }}, _valid_from
FROM {{ source('birth_certificate') }}
UNION ALL
SELECT '护士执业证书', 'resident_id', resident_id, name, cert_no, institution, first_reg_date, valid_until,
       CASE WHEN status = '注销' THEN '注销' WHEN valid_until IS NOT NULL AND valid_until < :run_date THEN '过期'
            ELSE '有效' END,
       {{ code('nurse_registration') }}, _valid_from
FROM {{ source('nurse_registration') }}
UNION ALL
SELECT COALESCE(REPLACE(content, '准予', ''), '行政许可'), 'uscc', uscc, entity_name, decision_no, authority, decision_date, valid_until,
       CASE WHEN valid_until IS NOT NULL AND valid_until < :run_date THEN '过期' ELSE '有效' END,
       {{ code('public_credit_record') }}, _valid_from
FROM {{ source('public_credit_record') }}
WHERE record_type = '行政许可'
